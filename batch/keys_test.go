package batch

import "testing"

func TestHasNullKey(t *testing.T) {
	keyed := Encode([]Record{{Key: []byte("a"), Value: []byte("1")}, {Key: []byte{}, Value: nil}}, 1, 0, NoProducer)
	keyless := Encode([]Record{{Key: []byte("a"), Value: []byte("1")}, {Key: nil, Value: []byte("2")}}, 1, 0, NoProducer)
	var scratch []byte
	for _, c := range []struct {
		name  string
		b     []byte
		codec int8
		want  bool
	}{{"keyed", keyed, CodecNone, false}, {"keyless", keyless, CodecNone, true}, {"keyed zstd", keyed, CodecZstd, false}, {"keyless lz4", keyless, CodecLZ4, true}} {
		b := c.b
		if c.codec != CodecNone {
			var err error
			if b, err = Recompress(nil, b, c.codec, &scratch); err != nil {
				t.Fatal(err)
			}
		}
		got, err := HasNullKey(b, &scratch)
		if err != nil || got != c.want {
			t.Errorf("%s: HasNullKey = %v, %v; want %v", c.name, got, err, c.want)
		}
	}
	if _, err := HasNullKey(keyed[:HeaderSize+2], &scratch); err == nil {
		t.Error("a truncated batch passed")
	}
}

func BenchmarkHasNullKey(b *testing.B) {
	recs := make([]Record, 100)
	for i := range recs {
		recs[i] = Record{Key: []byte("key"), Value: make([]byte, 100)}
	}
	bt := Encode(recs, 1, 0, NoProducer)
	var scratch []byte
	b.ReportAllocs()
	for b.Loop() {
		if _, err := HasNullKey(bt, &scratch); err != nil {
			b.Fatal(err)
		}
	}
}
