package batch

import (
	"bytes"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestEncodeAsFranzGoReadsIt checks Encode against an independent reader: franz-go's kmsg.
func TestEncodeAsFranzGoReadsIt(t *testing.T) {
	recs := []Record{{Key: []byte("k"), Value: []byte("v")}, {Value: []byte("only value")}, {Key: []byte("tomb")}}
	b := Encode(recs, 1700000000123, AttrTransactional, Producer{ID: 7, Epoch: 3, BaseSequence: 11})
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(b); err != nil {
		t.Fatal(err)
	}
	if rb.Magic != 2 || int(rb.Length)+LengthPrefix != len(b) || rb.Attributes != AttrTransactional ||
		rb.LastOffsetDelta != 2 || rb.NumRecords != 3 || rb.FirstTimestamp != 1700000000123 ||
		rb.MaxTimestamp != 1700000000123 || rb.ProducerID != 7 || rb.ProducerEpoch != 3 || rb.FirstSequence != 11 {
		t.Fatalf("header %+v", rb)
	}
	if uint32(rb.CRC) != Checksum(b) {
		t.Fatalf("crc %08x, computed %08x", uint32(rb.CRC), Checksum(b))
	}
	rest := rb.Records
	for i, want := range recs {
		l, n := kvarint(rest)
		var r kmsg.Record
		if err := r.ReadFrom(rest[:n+int(l)]); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		rest = rest[n+int(l):]
		if r.OffsetDelta != int32(i) || !bytes.Equal(r.Key, want.Key) || (r.Key == nil) != (want.Key == nil) ||
			!bytes.Equal(r.Value, want.Value) || (r.Value == nil) != (want.Value == nil) {
			t.Fatalf("record %d: %+v, want %+v", i, r, want)
		}
	}
}

func kvarint(b []byte) (int64, int) {
	var ux uint64
	for i, c := range b {
		ux |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return int64(ux>>1) ^ -int64(ux&1), i + 1
		}
	}
	return 0, 0
}

func TestDecodeRoundTrip(t *testing.T) {
	a := Encode([]Record{{Key: []byte("a"), Value: []byte("1")}, {Key: []byte("b")}}, 1, 0, NoProducer)
	m := Marker(9, 2, 5, true, 1)
	// As a partition read returns them: base offsets set, back to back.
	putBase := func(b []byte, off int64) []byte {
		b = bytes.Clone(b)
		for i := range 8 {
			b[PosBaseOffset+i] = byte(off >> (56 - 8*i))
		}
		return b
	}
	buf := append(putBase(a, 10), putBase(m, 12)...)
	type got struct {
		info Info
		rec  Record
	}
	var all []got
	next, err := Decode(buf, func(i Info, r Record) { all = append(all, got{i, r}) })
	if err != nil || next != 13 || len(all) != 3 {
		t.Fatalf("next %d err %v records %d", next, err, len(all))
	}
	if string(all[0].rec.Key) != "a" || string(all[0].rec.Value) != "1" || all[1].rec.Value != nil || all[0].info.IsControl() {
		t.Fatalf("plain records %+v", all[:2])
	}
	mi := all[2].info
	if !mi.IsControl() || !mi.IsTransactional() || mi.ProducerID != 9 || mi.ProducerEpoch != 2 {
		t.Fatalf("marker info %+v", mi)
	}
	if commit, ce, ok := ParseMarker(all[2].rec); !ok || !commit || ce != 5 {
		t.Fatalf("marker commit %v epoch %d ok %v", commit, ce, ok)
	}
	if !MarkerCommits(m) || MarkerCommits(Marker(9, 2, 5, false, 1)) || MarkerCommits(a) {
		t.Error("MarkerCommits reads the wrong marker type")
	}
	if ce := MarkerCoordinatorEpoch(m); ce != 5 {
		t.Fatalf("coordinator epoch %d", ce)
	}
	if ce := MarkerCoordinatorEpoch(a); ce != -1 {
		t.Fatalf("coordinator epoch of a plain batch %d", ce)
	}
	if next, err := Decode(nil, func(Info, Record) {}); next != -1 || err != nil {
		t.Fatalf("empty: %d %v", next, err)
	}
}

func TestDecodeMalformed(t *testing.T) {
	b := Encode([]Record{{Key: []byte("key"), Value: []byte("value")}}, 1, 0, NoProducer)
	for name, bad := range map[string][]byte{
		"cut":           b[:len(b)-1],
		"length short":  func() []byte { c := bytes.Clone(b); c[PosLength+3] = 10; return c }(),
		"record length": func() []byte { c := bytes.Clone(b); c[HeaderSize] = 0x7e; return c }(),
		"key length":    func() []byte { c := bytes.Clone(b); c[HeaderSize+4] = 0x7e; return c }(),
	} {
		if _, err := Decode(bad, func(Info, Record) {}); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v", name, err)
		}
	}
}

func TestPartitionFor(t *testing.T) {
	for _, tc := range []struct {
		id   string
		n, p int32
	}{
		{"test", 50, 3556498 % 50},    // "test".hashCode() == 3556498
		{"polygenelubricants", 50, 0}, // hashCode == Integer.MIN_VALUE: abs gives 0
		{"", 3, 0},
		{"\U0001F600", 1000, (0xD83D*31 + 0xDE00) % 1000}, // Java hashes the UTF-16 surrogate pair
	} {
		if got := PartitionFor(tc.id, tc.n); got != tc.p {
			t.Errorf("PartitionFor(%q, %d) = %d, want %d", tc.id, tc.n, got, tc.p)
		}
	}
}
