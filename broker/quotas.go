package broker

import (
	"context"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/quorum"
)

// Client quotas (KIP-546): DescribeClientQuotas and AlterClientQuotas, with Kafka's validation, over
// the quotas kept in the controller metadata (quorum/quotas.go). Enforcement is in throttle.go.

func init() {
	// v1 is flexible.
	register(kmsg.DescribeClientQuotas, 0, 1, serveCall((*Broker).handleDescribeClientQuotas))
	register(kmsg.AlterClientQuotas, 0, 1, serveCall((*Broker).handleAlterClientQuotas))
}

// Kafka's quota keys and the entity types they apply to (QuotaConfig).
const (
	QuotaProducerByteRate       = "producer_byte_rate"
	QuotaConsumerByteRate       = "consumer_byte_rate"
	QuotaRequestPercentage      = "request_percentage"
	QuotaControllerMutationRate = "controller_mutation_rate"
	QuotaConnectionCreationRate = "connection_creation_rate"
)

// quotaKeyIntegral tells, for each key valid on user and client-id entities, whether its values must
// be whole numbers (Kafka's LONG keys) rather than any positive double.
var quotaKeyIntegral = map[string]bool{
	QuotaProducerByteRate:       true,
	QuotaConsumerByteRate:       true,
	QuotaRequestPercentage:      false,
	QuotaControllerMutationRate: false,
}

// describe match types (DescribeClientQuotasRequestComponent.MatchType).
const (
	quotaMatchExact     = 0
	quotaMatchDefault   = 1
	quotaMatchSpecified = 2
)

func (b *Broker) handleDescribeClientQuotas(c *call, req *kmsg.DescribeClientQuotasRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeClientQuotasResponse)
	fail := func(code int16, msg string) kmsg.Response {
		resp.ErrorCode, resp.ErrorMessage = code, kmsg.StringPtr(msg)
		return resp
	}
	if !b.clusterAllowed(c, aclDescribeConfigs) {
		return fail(kerr.ClusterAuthorizationFailed.Code, kerr.ClusterAuthorizationFailed.Message)
	}
	// Kafka's ClientQuotasImage.describe: each type once, known types, match strings as the type says.
	exact := map[string]*string{}
	specified := map[string]bool{}
	for _, comp := range req.Components {
		t := comp.EntityType
		_, seen := exact[t]
		switch {
		case t == "":
			return fail(kerr.InvalidRequest.Code, "Invalid empty entity type.")
		case seen || specified[t]:
			return fail(kerr.InvalidRequest.Code, fmt.Sprintf("Entity type %s cannot appear more than once in the filter.", t))
		case t != quorum.QuotaUser && t != quorum.QuotaClientID && t != quorum.QuotaIP:
			return fail(kerr.UnsupportedVersion.Code, "Unsupported entity type "+t)
		}
		switch comp.MatchType {
		case quotaMatchExact:
			if comp.Match == nil {
				return fail(kerr.InvalidRequest.Code, "Request specified MATCH_TYPE_EXACT, but set match string to null.")
			}
			exact[t] = comp.Match
		case quotaMatchDefault:
			if comp.Match != nil {
				return fail(kerr.InvalidRequest.Code, "Request specified MATCH_TYPE_DEFAULT, but also specified a match string.")
			}
			exact[t] = nil
		case quotaMatchSpecified:
			if comp.Match != nil {
				return fail(kerr.InvalidRequest.Code, "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string.")
			}
			specified[t] = true
		default:
			return fail(kerr.UnsupportedVersion.Code, fmt.Sprintf("Unknown match type %d", comp.MatchType))
		}
	}
	_, ipExact := exact[quorum.QuotaIP]
	if ipExact || specified[quorum.QuotaIP] {
		_, u := exact[quorum.QuotaUser]
		_, cl := exact[quorum.QuotaClientID]
		if u || cl || specified[quorum.QuotaUser] || specified[quorum.QuotaClientID] {
			return fail(kerr.InvalidRequest.Code, "Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component.")
		}
	}
	q := b.ctl.Metadata().QuotasOf()
	keys := make([]string, 0, len(q.Entries))
	for k := range q.Entries {
		keys = append(keys, k)
	}
	slices.Sort(keys) // a stable answer
	for _, k := range keys {
		cq := q.Entries[k]
		if !quotaMatches(cq.Entity, exact, specified, req.Strict) {
			continue
		}
		e := kmsg.NewDescribeClientQuotasResponseEntry()
		for _, p := range cq.Entity {
			ee := kmsg.NewDescribeClientQuotasResponseEntryEntity()
			ee.Type, ee.Name = p.Type, p.Name
			e.Entity = append(e.Entity, ee)
		}
		vk := make([]string, 0, len(cq.Values))
		for key := range cq.Values {
			vk = append(vk, key)
		}
		slices.Sort(vk)
		for _, key := range vk {
			v := kmsg.NewDescribeClientQuotasResponseEntryValue()
			v.Key, v.Value = key, cq.Values[key]
			e.Values = append(e.Values, v)
		}
		resp.Entries = append(resp.Entries, e)
	}
	return resp
}

// quotaMatches is Kafka's filter (ClientQuotasImage.describe): every exact component names the
// entity's part (nil: its default), every "specified" type is a part of the entity, named or default
// (MATCH_TYPE_SPECIFIED is "any"); strict admits no other part.
func quotaMatches(e quorum.QuotaEntity, exact map[string]*string, specified map[string]bool, strict bool) bool {
	if strict && len(e) != len(exact)+len(specified) {
		return false
	}
	part := func(t string) (quorum.QuotaEntityPart, bool) {
		for _, p := range e {
			if p.Type == t {
				return p, true
			}
		}
		return quorum.QuotaEntityPart{}, false
	}
	for t, name := range exact {
		p, ok := part(t)
		if !ok || (p.Name == nil) != (name == nil) || name != nil && *p.Name != *name {
			return false
		}
	}
	for t := range specified {
		if _, ok := part(t); !ok {
			return false
		}
	}
	return true
}

func (b *Broker) handleAlterClientQuotas(c *call, req *kmsg.AlterClientQuotasRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.AlterClientQuotasResponse)
	allowed := b.clusterAllowed(c, aclAlterConfigs)
	var alts []quorum.QuotaAlteration
	var altIdx []int // the response entry of each alteration
	for _, entry := range req.Entries {
		re := kmsg.NewAlterClientQuotasResponseEntry()
		for _, e := range entry.Entity {
			ee := kmsg.NewAlterClientQuotasResponseEntryEntity()
			ee.Type, ee.Name = e.Type, e.Name
			re.Entity = append(re.Entity, ee)
		}
		alt, code, msg := validateQuotaEntry(entry)
		if !allowed {
			code, msg = kerr.ClusterAuthorizationFailed.Code, kerr.ClusterAuthorizationFailed.Message
		}
		if code != 0 {
			re.ErrorCode, re.ErrorMessage = code, kmsg.StringPtr(msg)
		} else if !req.ValidateOnly {
			alts = append(alts, alt)
			altIdx = append(altIdx, len(resp.Entries))
		}
		resp.Entries = append(resp.Entries, re)
	}
	if len(alts) > 0 {
		ctx, cancel := context.WithTimeout(b.ctx, securityTimeout)
		defer cancel()
		if err := b.ctl.AlterClientQuotas(ctx, alts); err != nil {
			for _, i := range altIdx {
				resp.Entries[i].ErrorCode, resp.Entries[i].ErrorMessage = errorCode(err), kmsg.StringPtr(err.Error())
			}
		}
	}
	return resp
}

// validateQuotaEntry checks one AlterClientQuotas entry as Kafka's ClientQuotaControlManager does and
// returns the alteration it makes, or an error code and message.
func validateQuotaEntry(entry kmsg.AlterClientQuotasRequestEntry) (quorum.QuotaAlteration, int16, string) {
	invalid := func(msg string) (quorum.QuotaAlteration, int16, string) {
		return quorum.QuotaAlteration{}, kerr.InvalidRequest.Code, msg
	}
	if len(entry.Entity) == 0 {
		return invalid("Invalid empty client quota entity")
	}
	var alt quorum.QuotaAlteration
	types := map[string]*string{}
	for _, e := range entry.Entity {
		if _, dup := types[e.Type]; dup {
			return invalid("Invalid empty client quota entity, duplicate entity entry " + e.Type)
		}
		switch e.Type {
		case quorum.QuotaUser, quorum.QuotaClientID, quorum.QuotaIP:
		default:
			return quorum.QuotaAlteration{}, kerr.UnsupportedVersion.Code, "Unhandled client quota entity type: " + e.Type
		}
		if e.Name != nil && *e.Name == "" {
			return invalid("Empty " + e.Type + " not supported")
		}
		types[e.Type] = e.Name
		alt.Entity = append(alt.Entity, quorum.QuotaEntityPart{Type: e.Type, Name: e.Name})
	}
	ipName, ip := types[quorum.QuotaIP]
	if ip && len(types) > 1 {
		return invalid("Invalid quota entity combination, IP entity should not be combined with User or ClientId")
	}
	if ip && ipName != nil && net.ParseIP(*ipName) == nil {
		return invalid(*ipName + " is not a valid IP or resolvable host.")
	}
	seen := map[string]bool{}
	for _, op := range entry.Ops {
		if seen[op.Key] {
			return invalid("Duplicate quota key " + op.Key)
		}
		seen[op.Key] = true
		if op.Remove {
			alt.Remove = append(alt.Remove, op.Key)
			continue
		}
		integral, known := quotaKeyIntegral[op.Key]
		if ip {
			integral, known = true, op.Key == QuotaConnectionCreationRate
		}
		switch {
		case !known:
			return invalid("Invalid configuration key " + op.Key)
		case !(op.Value > 0): // NaN too
			return invalid("Quota " + op.Key + " must be greater than 0")
		case integral && (op.Value > math.MaxInt64 || op.Value != math.Trunc(op.Value)):
			return invalid("Proposed value for " + op.Key + " must be an integer.")
		}
		if alt.Set == nil {
			alt.Set = map[string]float64{}
		}
		alt.Set[op.Key] = op.Value
	}
	return alt, 0, ""
}

// quotaUser is the user of a principal for quota entities: its name without the "User:" type.
func quotaUser(principal string) string {
	if _, name, ok := strings.Cut(principal, ":"); ok {
		return name
	}
	return principal
}
