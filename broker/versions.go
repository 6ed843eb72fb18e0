package broker

import (
	"fmt"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Every API the broker serves registers itself beside its handler (a func init in the handler's
// file): its key, the versions it serves completely, and how it is served. The registry is the
// protocol table: ApiVersions advertises it, decodeRequest checks versions against it and serve
// dispatches by it. Each registration says why its range stops where it does.

// apiRange is the version range of one API key that the broker serves completely. A client uses
// min(its max, our max), so a range is advertised only when every version in it works.
type apiRange struct {
	key      int16
	min, max int16
}

// api is one registered API.
type api struct {
	apiRange
	// serve answers a request on a request goroutine and returns the response, or nil when the
	// handler answered itself (Fetch). Nil for the APIs HandleRequest answers on the event loop
	// (ApiVersions, Produce).
	serve func(b *Broker, c *call) kmsg.Response
}

// apis is the registry, filled by init functions and only read after.
var apis = map[int16]api{}

// register adds an API to the registry.
func register(key kmsg.Key, minVersion, maxVersion int16, serve func(b *Broker, c *call) kmsg.Response) {
	if _, dup := apis[key.Int16()]; dup {
		panic(fmt.Sprintf("broker: %s registered twice", kmsg.NameForKey(key.Int16())))
	}
	apis[key.Int16()] = api{apiRange{key.Int16(), minVersion, maxVersion}, serve}
}

// serveRequest adapts a handler of one request type to api.serve.
func serveRequest[R kmsg.Request](handle func(b *Broker, req R) kmsg.Response) func(*Broker, *call) kmsg.Response {
	return func(b *Broker, c *call) kmsg.Response { return handle(b, c.req.(R)) }
}

// apiVersionsKeys is what ApiVersions advertises: the registry by key.
var apiVersionsKeys = sync.OnceValue(func() []kmsg.ApiVersionsResponseApiKey {
	keys := make([]kmsg.ApiVersionsResponseApiKey, 0, len(apis))
	for _, a := range apis {
		k := kmsg.NewApiVersionsResponseApiKey()
		k.ApiKey, k.MinVersion, k.MaxVersion = a.key, a.min, a.max
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b kmsg.ApiVersionsResponseApiKey) int { return int(a.ApiKey) - int(b.ApiKey) })
	return keys
})
