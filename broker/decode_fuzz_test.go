package broker

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/internal/kafkatest"
	"github.com/sluicebroker/sluice/internal/kafkawire"
)

// encodeRequest frames a request as a client would: header v1 (or v2 when flexible), then the body.
func encodeRequest(req kmsg.Request, correlationID int32, clientID string) []byte {
	return kafkawire.AppendRequest(nil, clientID, correlationID, req)[4:] // the broker's parser gets the frame without its size
}

// seedRequests are real requests of every served API at a version clients use.
func seedRequests() [][]byte {
	produce := kmsg.NewPtrProduceRequest()
	produce.Version, produce.Acks = 9, -1
	pt := kmsg.NewProduceRequestTopic()
	pt.Topic = "t"
	pp := kmsg.NewProduceRequestTopicPartition()
	pp.Records = kafkatest.Batch([]byte("v"))
	pt.Partitions = append(pt.Partitions, pp)
	produce.Topics = append(produce.Topics, pt)

	fetch := kmsg.NewPtrFetchRequest()
	fetch.Version = 12
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = "t"
	ft.Partitions = append(ft.Partitions, kmsg.NewFetchRequestTopicPartition())
	fetch.Topics = append(fetch.Topics, ft)

	meta := kmsg.NewPtrMetadataRequest()
	meta.Version = 12
	apiv := kmsg.NewPtrApiVersionsRequest()
	apiv.Version, apiv.ClientSoftwareName, apiv.ClientSoftwareVersion = 3, "kgo", "1.0"
	create := kmsg.NewPtrCreateTopicsRequest()
	create.Version = 7
	ct := kmsg.NewCreateTopicsRequestTopic()
	ct.Topic, ct.NumPartitions, ct.ReplicationFactor = "t", 3, 1
	create.Topics = append(create.Topics, ct)
	lo := kmsg.NewPtrListOffsetsRequest()
	lo.Version = 6
	desc := kmsg.NewPtrDescribeConfigsRequest()
	desc.Version = 4
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = 1, "SCRAM-SHA-512"
	auth := kmsg.NewPtrSASLAuthenticateRequest()
	auth.Version, auth.SASLAuthBytes = 2, []byte("n,,n=user,r=\xff\x00,")
	acls := kmsg.NewPtrCreateACLsRequest()
	acls.Version = 3
	acls.Creations = append(acls.Creations, kmsg.NewCreateACLsRequestCreation())
	var out [][]byte
	for _, r := range []kmsg.Request{produce, fetch, meta, apiv, create, lo, desc, hs, auth, acls} {
		out = append(out, encodeRequest(r, 1, "fuzz"))
	}
	return out
}

// FuzzDecodeRequest: any frame either decodes to a request whose re-encoding decodes to the same bytes,
// or is refused with an error; it never panics.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range seedRequests() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		hdr, req, err := decodeRequest(frame)
		if err != nil {
			return
		}
		again := encodeRequest(req, hdr.correlationID, hdr.clientID)
		hdr2, req2, err := decodeRequest(again)
		if err != nil {
			t.Fatalf("re-encoded %s v%d does not decode: %v", kmsg.NameForKey(hdr.key), hdr.version, err)
		}
		if hdr2.key != hdr.key || hdr2.version != hdr.version || hdr2.correlationID != hdr.correlationID {
			t.Fatalf("header changed in round trip: %+v vs %+v", hdr, hdr2)
		}
		if third := encodeRequest(req2, hdr2.correlationID, hdr2.clientID); !bytes.Equal(third, again) {
			t.Fatalf("%s v%d: encoding not stable across a round trip", kmsg.NameForKey(hdr.key), hdr.version)
		}
	})
}

func TestDecodeRequestRefusesWhatWeDoNotServe(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"short", []byte{0, 1, 2}},
		{"unknown key", []byte{3, 231, 0, 0, 0, 0, 0, 1, 0, 0}},
		{"produce v2 (message format v1)", []byte{0, 0, 0, 2, 0, 0, 0, 1, 0, 0}},
		{"client id past the end", []byte{0, 3, 0, 1, 0, 0, 0, 1, 0, 50, 'a'}},
	} {
		if _, _, err := decodeRequest(tc.frame); err == nil {
			t.Errorf("%s: decoded without error", tc.name)
		}
	}
	for _, s := range seedRequests() {
		if _, _, err := decodeRequest(s); err != nil {
			t.Errorf("seed request refused: %v", err)
		}
	}
	// An ApiVersions request newer than ours is answered (KIP-511), not refused.
	v := kmsg.NewPtrApiVersionsRequest()
	v.Version = 5
	if _, _, err := decodeRequest(encodeRequest(v, 1, "x")); err != errApiVersionTooNew {
		t.Errorf("ApiVersions v5: %v, want errApiVersionTooNew", err)
	}
}
