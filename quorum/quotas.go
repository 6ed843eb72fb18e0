package quorum

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// Client quotas (KIP-546) live in the controller metadata beside users and ACLs, so every broker
// enforces the same ones and they survive restarts: per entity (user, client-id or both, or ip; each
// a name or the default), a set of quota keys (producer_byte_rate, ...) with their values.

// Quota entity types, as Kafka names them.
const (
	QuotaUser     = "user"
	QuotaClientID = "client-id"
	QuotaIP       = "ip"
)

// QuotaEntityPart is one component of a quota entity: a type and a name, nil for the type's default.
type QuotaEntityPart struct {
	Type string
	Name *string `json:",omitempty"`
}

// QuotaEntity is a quota's entity: its parts in type order (client-id before user), one per type.
type QuotaEntity []QuotaEntityPart

// Key is the entity's canonical string (the map key of Quotas): "client-id=a,user=<default>". Names
// are quoted so that no name can forge another entity's key.
func (e QuotaEntity) Key() string {
	var b strings.Builder
	for i, p := range e {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.Type)
		b.WriteByte('=')
		if p.Name == nil {
			b.WriteString("<default>")
		} else {
			b.WriteByte('"')
			b.WriteString(strings.ReplaceAll(*p.Name, `"`, `\"`))
			b.WriteByte('"')
		}
	}
	return b.String()
}

// Sorted returns the entity with its parts in type order.
func (e QuotaEntity) Sorted() QuotaEntity {
	out := slices.Clone(e)
	slices.SortFunc(out, func(a, b QuotaEntityPart) int { return strings.Compare(a.Type, b.Type) })
	return out
}

// ClientQuota is one entity's quota values.
type ClientQuota struct {
	Entity QuotaEntity
	Values map[string]float64
}

// Quotas is the replicated client quota metadata. Immutable once published: a change makes a new
// *Quotas, so brokers can cache what they resolved from one by its pointer.
type Quotas struct {
	Entries map[string]ClientQuota `json:",omitempty"` // by QuotaEntity.Key
}

// Value returns the value of key set on exactly this entity.
func (q *Quotas) Value(e QuotaEntity, key string) (float64, bool) {
	if q == nil {
		return 0, false
	}
	cq, ok := q.Entries[e.Key()]
	if !ok {
		return 0, false
	}
	v, ok := cq.Values[key]
	return v, ok
}

// QuotasOf returns the metadata's quotas (never nil).
func (md *Metadata) QuotasOf() *Quotas {
	if md == nil || md.Quotas == nil {
		return emptyQuotas
	}
	return md.Quotas
}

var emptyQuotas = &Quotas{}

// QuotaAlteration changes one entity's quota: Set adds or replaces values, Remove deletes keys.
type QuotaAlteration struct {
	Entity QuotaEntity
	Set    map[string]float64 `json:",omitempty"`
	Remove []string           `json:",omitempty"`
}

// AlterClientQuotas applies the alterations together; the broker has validated them (Kafka's rules:
// broker/quotas.go). An entity left without values is removed.
func (c *Controller) AlterClientQuotas(ctx context.Context, alts []QuotaAlteration) error {
	if len(alts) == 0 {
		return nil
	}
	_, _, err := c.propose(ctx, &alterQuotasCmd{Quotas: alts})
	return err
}

type alterQuotasCmd struct {
	Quotas []QuotaAlteration `json:"quotas,omitempty"`
}

func (*alterQuotasCmd) op() string { return "alter_quotas" }

func (cmd *alterQuotasCmd) validate() error {
	for _, a := range cmd.Quotas {
		if len(a.Entity) == 0 {
			return fmt.Errorf("%w: empty quota entity", ErrInvalidRequest)
		}
	}
	return nil
}

func (cmd *alterQuotasCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	entries := maps.Clone(md.QuotasOf().Entries)
	if entries == nil {
		entries = map[string]ClientQuota{}
	}
	for _, a := range cmd.Quotas {
		if len(a.Entity) == 0 {
			return nil, invalid("empty quota entity")
		}
		e := a.Entity.Sorted()
		k := e.Key()
		cq := ClientQuota{Entity: e, Values: maps.Clone(entries[k].Values)}
		if cq.Values == nil {
			cq.Values = map[string]float64{}
		}
		for _, r := range a.Remove {
			delete(cq.Values, r)
		}
		maps.Copy(cq.Values, a.Set)
		if len(cq.Values) == 0 {
			delete(entries, k)
		} else {
			entries[k] = cq
		}
	}
	n := *md
	n.Quotas = &Quotas{Entries: entries}
	return &n, sm.Result{}
}
