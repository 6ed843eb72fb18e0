package quorum

import (
	"encoding/json"
	"testing"
)

// TestApplyQuotas: alterations set and remove values, an entity left without values disappears, the
// previous *Quotas is untouched (immutable), quotas survive a snapshot's JSON round trip, and the
// log entry's wire form is pinned.
func TestApplyQuotas(t *testing.T) {
	alice, app := "alice", "app"
	userApp := QuotaEntity{{Type: QuotaUser, Name: &alice}, {Type: QuotaClientID, Name: &app}} // unsorted on purpose
	defClient := QuotaEntity{{Type: QuotaClientID}}
	md := emptyMetadata()
	next, res := (&alterQuotasCmd{Quotas: []QuotaAlteration{
		{Entity: userApp, Set: map[string]float64{"producer_byte_rate": 1024, "consumer_byte_rate": 2048}},
		{Entity: defClient, Set: map[string]float64{"producer_byte_rate": 10}},
	}}).apply(md)
	if next == nil || res.Value != 0 {
		t.Fatalf("apply: %+v", res)
	}
	q := next.QuotasOf()
	if v, ok := q.Value(userApp.Sorted(), "producer_byte_rate"); !ok || v != 1024 {
		t.Fatalf("user+client producer_byte_rate: %v %v", v, ok)
	}
	after, _ := (&alterQuotasCmd{Quotas: []QuotaAlteration{
		{Entity: defClient, Remove: []string{"producer_byte_rate"}},
		{Entity: userApp, Remove: []string{"consumer_byte_rate"}},
	}}).apply(next)
	if len(after.QuotasOf().Entries) != 1 {
		t.Fatalf("entries after removals: %+v", after.QuotasOf().Entries)
	}
	if _, ok := q.Value(defClient, "producer_byte_rate"); !ok {
		t.Fatal("the earlier *Quotas changed")
	}
	if _, ok := q.Value(userApp.Sorted(), "consumer_byte_rate"); !ok {
		t.Fatal("the earlier *Quotas changed")
	}
	data, err := json.Marshal(after)
	if err != nil {
		t.Fatal(err)
	}
	back := emptyMetadata()
	if err := json.Unmarshal(data, back); err != nil {
		t.Fatal(err)
	}
	if v, ok := back.QuotasOf().Value(userApp.Sorted(), "producer_byte_rate"); !ok || v != 1024 {
		t.Fatalf("after a snapshot round trip: %v %v", v, ok)
	}
	empty := &alterQuotasCmd{Quotas: []QuotaAlteration{{}}}
	if _, res := empty.apply(md); res.Value != resultInvalidRequest || empty.validate() == nil {
		t.Fatal("an empty entity was applied")
	}
	// The log entry's wire form, as data directories will hold it.
	data, err = encodeCommand(&alterQuotasCmd{Quotas: []QuotaAlteration{{Entity: defClient, Set: map[string]float64{"producer_byte_rate": 10}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), `{"op":"alter_quotas","quotas":[{"Entity":[{"Type":"client-id"}],"Set":{"producer_byte_rate":10}}]}`; got != want {
		t.Errorf("wire form:\n got %s\nwant %s", got, want)
	}
	back2, err := decodeCommand(data)
	if err != nil || back2.op() != "alter_quotas" {
		t.Fatalf("decode: %v %v", back2, err)
	}
}
