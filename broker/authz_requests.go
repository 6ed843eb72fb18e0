package broker

import (
	"reflect"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/quorum"
)

// Which ACL each request needs, as Kafka's KafkaApis checks them, in one place: a request refused
// whole is answered here with the API's error (GROUP_, TRANSACTIONAL_ID_, CLUSTER_AUTHORIZATION_FAILED);
// a request refused for some topics runs without them and their entries are put back in its response
// with TOPIC_AUTHORIZATION_FAILED. Produce and Fetch check inline (produce.go, fetch.go: their hot
// paths only look the topic up in the connection's decision cache). The security APIs (acls.go) check
// their own cluster operation.

// serveSecure runs a request under security: the authorizer before and after the handler, and the
// addresses of the TLS or SASL_PLAINTEXT listener for clients that came through one.
func (b *Broker) serveSecure(c *call, a api) kmsg.Response {
	var resp kmsg.Response
	if b.sec.ACL {
		var post []func(kmsg.Response)
		if deny := b.authorizeCall(c, &post); deny != nil {
			return deny
		}
		resp = a.serve(b, c)
		if resp != nil {
			for _, p := range post {
				p(resp)
			}
		}
	} else {
		resp = a.serve(b, c)
	}
	if resp != nil {
		switch {
		case c.nr.Conn.TLS():
			b.listenerAddresses(resp, func(bi quorum.BrokerInfo) int32 { return bi.TLSPort })
		case c.nr.Conn.SecurityProtocol() == ProtocolSASLPlaintext:
			b.listenerAddresses(resp, func(bi quorum.BrokerInfo) int32 { return bi.SASLPort })
		}
	}
	return resp
}

// authorizeProduce returns the error code refusing a produce to topic, or 0 (produce.go).
func (b *Broker) authorizeProduce(c *call, req *kmsg.ProduceRequest, topic string) int16 {
	if b.sec == nil || !b.sec.ACL {
		return 0
	}
	if req.TransactionID != nil && !b.authorize(c, resTxnID, aclWrite, *req.TransactionID) {
		return kerr.TransactionalIDAuthorizationFailed.Code
	}
	if !b.authorize(c, resTopic, aclWrite, topic) {
		return kerr.TopicAuthorizationFailed.Code
	}
	return 0
}

// authorizeCall checks c's request before it runs. It returns the whole answer when the request is
// refused (or nothing of it is left to run), else nil, with post steps to apply to the response. The
// rules are grouped by the resource they are about (topicRules, groupRules, txnRules, clusterRules).
func (b *Broker) authorizeCall(c *call, post *[]func(kmsg.Response)) kmsg.Response {
	switch c.req.(type) {
	case *kmsg.ApiVersionsRequest, *kmsg.SASLHandshakeRequest, *kmsg.SASLAuthenticateRequest, *kmsg.DescribeClusterRequest,
		*kmsg.DescribeACLsRequest, *kmsg.CreateACLsRequest, *kmsg.DeleteACLsRequest,
		*kmsg.DescribeUserSCRAMCredentialsRequest, *kmsg.AlterUserSCRAMCredentialsRequest,
		*kmsg.DescribeClientQuotasRequest, *kmsg.AlterClientQuotasRequest,
		*kmsg.FetchRequest, *kmsg.ProduceRequest:
		return nil // nothing to check, or the handler checks (acls.go, quotas.go, fetch.go, produce.go)
	}
	a := authzCall{b: b, c: c, post: post}
	for _, rules := range []func(authzCall) (kmsg.Response, bool){authzCall.topicRules, authzCall.groupRules, authzCall.txnRules, authzCall.clusterRules} {
		if resp, ok := rules(a); ok {
			return resp
		}
	}
	// An API added without a rule here: only what may alter the cluster may use it.
	if !a.cluster(aclAlter) {
		return a.deny(codeClust)
	}
	return nil
}

// Kafka's error codes of a refused request, by the resource refused.
var (
	codeTopic = kerr.TopicAuthorizationFailed.Code
	codeGroup = kerr.GroupAuthorizationFailed.Code
	codeTxn   = kerr.TransactionalIDAuthorizationFailed.Code
	codeClust = kerr.ClusterAuthorizationFailed.Code
)

// authzCall is one request being authorized: the connection whose decisions count, and the steps
// the rules add to apply to its response.
type authzCall struct {
	b    *Broker
	c    *call
	post *[]func(kmsg.Response)
}

// topicCode refuses the topics the principal may not op.
func (a authzCall) topicCode(op int8) func(string) int16 {
	return func(t string) int16 {
		if a.b.authorize(a.c, resTopic, op, t) {
			return 0
		}
		return codeTopic
	}
}

// allCode refuses every topic with code.
func allCode(code int16) func(string) int16 { return func(string) int16 { return code } }

func (a authzCall) group(op int8, g string) bool { return a.b.authorize(a.c, resGroup, op, g) }

func (a authzCall) txnID(op int8, id string) bool { return a.b.authorize(a.c, resTxnID, op, id) }

func (a authzCall) cluster(op int8) bool { return a.b.authorize(a.c, resCluster, op, clusterResource) }

// deny answers the whole request with code.
func (a authzCall) deny(code int16) kmsg.Response {
	r := a.c.req.ResponseKind()
	setTopLevelError(r, code)
	return r
}

// after adds a step to apply to the response.
func (a authzCall) after(p func(kmsg.Response)) { *a.post = append(*a.post, p) }

// split runs the request without the topics code refuses; answered here when none is left.
func (a authzCall) split(code func(string) int16) kmsg.Response {
	p, emptied := splitTopics(a.c.req, code)
	if p == nil {
		return nil
	}
	if emptied {
		r := a.c.req.ResponseKind()
		p(r)
		return r
	}
	a.after(p)
	return nil
}

func (a authzCall) denyGroup(ok bool) kmsg.Response {
	if ok {
		return nil
	}
	return a.deny(codeGroup)
}

// topicRules checks the topic APIs: an operation on each topic named; refused topics are put back
// with TOPIC_AUTHORIZATION_FAILED. ok is false for a request of another kind.
func (a authzCall) topicRules() (resp kmsg.Response, ok bool) {
	switch req := a.c.req.(type) {
	case *kmsg.MetadataRequest:
		return a.b.authorizeMetadata(a.c, req, a.post), true
	case *kmsg.ListOffsetsRequest, *kmsg.OffsetForLeaderEpochRequest:
		return a.split(a.topicCode(aclDescribe)), true
	case *kmsg.DescribeProducersRequest:
		return a.split(a.topicCode(aclRead)), true
	case *kmsg.CreatePartitionsRequest:
		return a.split(a.topicCode(aclAlter)), true
	case *kmsg.DeleteTopicsRequest:
		return a.split(a.topicCode(aclDelete)), true
	case *kmsg.CreateTopicsRequest:
		if a.cluster(aclCreate) {
			return nil, true
		}
		return a.split(a.topicCode(aclCreate)), true
	case *kmsg.DescribeConfigsRequest:
		return a.b.authorizeConfigs(a.c, aclDescribeConfigs, a.post), true
	case *kmsg.AlterConfigsRequest:
		return a.b.authorizeConfigs(a.c, aclAlterConfigs, a.post), true
	case *kmsg.IncrementalAlterConfigsRequest:
		return a.b.authorizeConfigs(a.c, aclAlterConfigs, a.post), true
	}
	return nil, false
}

// groupRules checks the group APIs (offsets, membership, coordinators): the group, then the
// topics. ok is false for a request of another kind.
func (a authzCall) groupRules() (resp kmsg.Response, ok bool) {
	switch req := a.c.req.(type) {
	case *kmsg.OffsetCommitRequest:
		if !a.group(aclRead, req.Group) {
			return a.split(allCode(codeGroup)), true
		}
		return a.split(a.topicCode(aclRead)), true
	case *kmsg.TxnOffsetCommitRequest:
		switch {
		case !a.txnID(aclWrite, req.TransactionalID):
			return a.split(allCode(codeTxn)), true
		case !a.group(aclRead, req.Group):
			return a.split(allCode(codeGroup)), true
		}
		return a.split(a.topicCode(aclRead)), true
	case *kmsg.OffsetDeleteRequest:
		if !a.group(aclDelete, req.Group) {
			return a.deny(codeGroup), true
		}
		return a.split(a.topicCode(aclRead)), true
	case *kmsg.OffsetFetchRequest:
		return a.b.authorizeOffsetFetch(a.c, req, a.post), true
	case *kmsg.FindCoordinatorRequest:
		check := func(key string) int16 {
			switch {
			case req.CoordinatorType == 0 && !a.group(aclDescribe, key):
				return codeGroup
			case req.CoordinatorType == 1 && !a.txnID(aclDescribe, key):
				return codeTxn
			}
			return 0
		}
		if req.Version < 4 {
			if code := check(req.CoordinatorKey); code != 0 {
				r := a.deny(code).(*kmsg.FindCoordinatorResponse)
				r.NodeID, r.Port = -1, -1
				return r, true
			}
			return nil, true
		}
		a.after(func(r kmsg.Response) {
			for i := range r.(*kmsg.FindCoordinatorResponse).Coordinators {
				co := &r.(*kmsg.FindCoordinatorResponse).Coordinators[i]
				if code := check(co.Key); code != 0 {
					co.ErrorCode, co.NodeID, co.Host, co.Port = code, -1, "", -1
				}
			}
		})
		return nil, true
	case *kmsg.JoinGroupRequest:
		return a.denyGroup(a.group(aclRead, req.Group)), true
	case *kmsg.SyncGroupRequest:
		return a.denyGroup(a.group(aclRead, req.Group)), true
	case *kmsg.HeartbeatRequest:
		return a.denyGroup(a.group(aclRead, req.Group)), true
	case *kmsg.LeaveGroupRequest:
		return a.denyGroup(a.group(aclRead, req.Group)), true
	case *kmsg.DescribeGroupsRequest:
		a.after(func(r kmsg.Response) {
			for i := range r.(*kmsg.DescribeGroupsResponse).Groups {
				g := &r.(*kmsg.DescribeGroupsResponse).Groups[i]
				if !a.group(aclDescribe, g.Group) {
					name := g.Group
					*g = kmsg.NewDescribeGroupsResponseGroup()
					g.Group, g.ErrorCode = name, codeGroup
				}
			}
		})
		return nil, true
	case *kmsg.ListGroupsRequest:
		if !a.cluster(aclDescribe) {
			a.after(func(r kmsg.Response) {
				lr := r.(*kmsg.ListGroupsResponse)
				lr.Groups = slices.DeleteFunc(lr.Groups, func(g kmsg.ListGroupsResponseGroup) bool { return !a.group(aclDescribe, g.Group) })
			})
		}
		return nil, true
	case *kmsg.DeleteGroupsRequest:
		var refused []string
		req.Groups = slices.DeleteFunc(req.Groups, func(g string) bool {
			if a.group(aclDelete, g) {
				return false
			}
			refused = append(refused, g)
			return true
		})
		add := func(r kmsg.Response) {
			dr := r.(*kmsg.DeleteGroupsResponse)
			for _, g := range refused {
				e := kmsg.NewDeleteGroupsResponseGroup()
				e.Group, e.ErrorCode = g, codeGroup
				dr.Groups = append(dr.Groups, e)
			}
		}
		if len(req.Groups) == 0 {
			r := a.c.req.ResponseKind()
			add(r)
			return r, true
		}
		a.after(add)
		return nil, true
	}
	return nil, false
}

// txnRules checks the transaction APIs: the transactional id, then the topics or the cluster. ok is
// false for a request of another kind.
func (a authzCall) txnRules() (resp kmsg.Response, ok bool) {
	switch req := a.c.req.(type) {
	case *kmsg.InitProducerIDRequest:
		if req.TransactionalID != nil {
			if !a.txnID(aclWrite, *req.TransactionalID) {
				return a.deny(codeTxn), true
			}
			return nil, true
		}
		if !a.b.authorizeAnyTopicWrite(a.c) {
			return a.deny(codeClust), true
		}
		return nil, true
	case *kmsg.AddPartitionsToTxnRequest:
		if req.Version >= 4 {
			if !a.cluster(aclClusterAction) {
				return a.deny(codeClust), true
			}
			return nil, true
		}
		if !a.txnID(aclWrite, req.TransactionalID) {
			return a.split(allCode(codeTxn)), true
		}
		// Kafka adds none of the partitions when one topic is refused: the others are not attempted.
		refused := false
		for _, t := range req.Topics {
			refused = refused || !a.b.authorize(a.c, resTopic, aclWrite, t.Topic)
		}
		if refused {
			code := a.topicCode(aclWrite)
			return a.split(func(t string) int16 {
				if cd := code(t); cd != 0 {
					return cd
				}
				return kerr.OperationNotAttempted.Code
			}), true
		}
		return nil, true
	case *kmsg.AddOffsetsToTxnRequest:
		switch {
		case !a.txnID(aclWrite, req.TransactionalID):
			return a.deny(codeTxn), true
		case !a.group(aclRead, req.Group):
			return a.deny(codeGroup), true
		}
		return nil, true
	case *kmsg.EndTxnRequest:
		if !a.txnID(aclWrite, req.TransactionalID) {
			return a.deny(codeTxn), true
		}
		return nil, true
	case *kmsg.DescribeTransactionsRequest:
		a.after(func(r kmsg.Response) {
			for i := range r.(*kmsg.DescribeTransactionsResponse).TransactionStates {
				s := &r.(*kmsg.DescribeTransactionsResponse).TransactionStates[i]
				if !a.txnID(aclDescribe, s.TransactionalID) {
					id := s.TransactionalID
					*s = kmsg.NewDescribeTransactionsResponseTransactionState()
					s.TransactionalID, s.ErrorCode = id, codeTxn
				}
			}
		})
		return nil, true
	case *kmsg.ListTransactionsRequest:
		a.after(func(r kmsg.Response) {
			lr := r.(*kmsg.ListTransactionsResponse)
			lr.TransactionStates = slices.DeleteFunc(lr.TransactionStates, func(s kmsg.ListTransactionsResponseTransactionState) bool {
				return !a.txnID(aclDescribe, s.TransactionalID)
			})
		})
		return nil, true
	case *kmsg.WriteTxnMarkersRequest:
		if a.cluster(aclClusterAction) {
			return nil, true
		}
		r := req.ResponseKind().(*kmsg.WriteTxnMarkersResponse)
		for _, m := range req.Markers {
			rm := kmsg.NewWriteTxnMarkersResponseMarker()
			rm.ProducerID = m.ProducerID
			for _, t := range m.Topics {
				rt := kmsg.NewWriteTxnMarkersResponseMarkerTopic()
				rt.Topic = t.Topic
				for _, p := range t.Partitions {
					rp := kmsg.NewWriteTxnMarkersResponseMarkerTopicPartition()
					rp.Partition, rp.ErrorCode = p, codeClust
					rt.Partitions = append(rt.Partitions, rp)
				}
				rm.Topics = append(rm.Topics, rt)
			}
			r.Markers = append(r.Markers, rm)
		}
		return r, true
	}
	return nil, false
}

// clusterRules checks the cluster APIs: an operation on the cluster. ok is false for a request of
// another kind.
func (a authzCall) clusterRules() (resp kmsg.Response, ok bool) {
	switch a.c.req.(type) {
	case *kmsg.BrokerRegistrationRequest:
		if !a.cluster(aclClusterAction) {
			return a.deny(codeClust), true
		}
		return nil, true
	case *kmsg.AlterPartitionAssignmentsRequest:
		if !a.cluster(aclAlter) {
			return a.deny(codeClust), true
		}
		return nil, true
	case *kmsg.ListPartitionReassignmentsRequest:
		if !a.cluster(aclDescribe) {
			return a.deny(codeClust), true
		}
		return nil, true

	}
	return nil, false
}

// authorizeMetadata: listing all topics shows only those the principal may describe; a named topic
// it may not describe, or may not create when it would be auto-created, is TOPIC_AUTHORIZATION_FAILED.
func (b *Broker) authorizeMetadata(c *call, req *kmsg.MetadataRequest, post *[]func(kmsg.Response)) kmsg.Response {
	if req.Topics == nil {
		*post = append(*post, func(r kmsg.Response) {
			mr := r.(*kmsg.MetadataResponse)
			mr.Topics = slices.DeleteFunc(mr.Topics, func(t kmsg.MetadataResponseTopic) bool {
				return t.Topic == nil || !b.authorize(c, resTopic, aclDescribe, *t.Topic)
			})
		})
		return nil
	}
	md := b.ctl.Metadata()
	canCreate := b.authorize(c, resCluster, aclCreate, clusterResource)
	autoCreate := b.cfg.AutoCreateTopics && (req.Version < 4 || req.AllowAutoTopicCreation) // as handleMetadata
	named := map[string]bool{}
	var refused []string
	req.Topics = slices.DeleteFunc(req.Topics, func(t kmsg.MetadataRequestTopic) bool {
		if t.Topic == nil {
			return false
		}
		name := *t.Topic
		named[name] = true
		_, exists := md.Topics[name]
		ok := b.authorize(c, resTopic, aclDescribe, name) &&
			(exists || !autoCreate || canCreate || b.authorize(c, resTopic, aclCreate, name))
		if !ok {
			refused = append(refused, name)
		}
		return !ok
	})
	*post = append(*post, func(r kmsg.Response) {
		// Topics looked up by ID (v10+) are checked on the way out; their names stay hidden.
		mr := r.(*kmsg.MetadataResponse)
		for i := range mr.Topics {
			t := &mr.Topics[i]
			if t.Topic != nil && t.ErrorCode == 0 && !named[*t.Topic] && !b.authorize(c, resTopic, aclDescribe, *t.Topic) {
				id := t.TopicID
				*t = kmsg.NewMetadataResponseTopic()
				t.TopicID, t.ErrorCode = id, kerr.TopicAuthorizationFailed.Code
			}
		}
	})
	if len(refused) > 0 {
		*post = append(*post, func(r kmsg.Response) {
			mr := r.(*kmsg.MetadataResponse)
			for _, name := range refused {
				t := kmsg.NewMetadataResponseTopic()
				t.Topic = kmsg.StringPtr(name)
				t.ErrorCode = kerr.TopicAuthorizationFailed.Code
				mr.Topics = append(mr.Topics, t)
			}
		})
	}
	return nil
}

// authorizeOffsetFetch: Describe on the group, then offsets only of topics the principal may
// describe: the others are left out of an all-topics answer and refused when named.
func (b *Broker) authorizeOffsetFetch(c *call, req *kmsg.OffsetFetchRequest, post *[]func(kmsg.Response)) kmsg.Response {
	codeGroup, codeTopic := kerr.GroupAuthorizationFailed.Code, kerr.TopicAuthorizationFailed.Code
	topicOK := func(t string) bool { return b.authorize(c, resTopic, aclDescribe, t) }
	if req.Version < 8 {
		if !b.authorize(c, resGroup, aclDescribe, req.Group) {
			r := c.req.ResponseKind().(*kmsg.OffsetFetchResponse)
			r.ErrorCode = codeGroup
			if p, _ := splitTopics(c.req, func(string) int16 { return codeGroup }); p != nil {
				p(r)
			}
			return r
		}
		named := req.Topics != nil
		*post = append(*post, func(r kmsg.Response) {
			fr := r.(*kmsg.OffsetFetchResponse)
			fr.Topics = slices.DeleteFunc(fr.Topics, func(t kmsg.OffsetFetchResponseTopic) bool {
				if topicOK(t.Topic) {
					return false
				}
				for j := range t.Partitions {
					t.Partitions[j].ErrorCode, t.Partitions[j].Offset, t.Partitions[j].Metadata = codeTopic, -1, nil
				}
				return !named
			})
		})
		return nil
	}
	named := map[string]bool{}
	for _, g := range req.Groups {
		named[g.Group] = g.Topics != nil
	}
	*post = append(*post, func(r kmsg.Response) {
		fr := r.(*kmsg.OffsetFetchResponse)
		for i := range fr.Groups {
			g := &fr.Groups[i]
			if !b.authorize(c, resGroup, aclDescribe, g.Group) {
				g.ErrorCode, g.Topics = codeGroup, nil
				continue
			}
			g.Topics = slices.DeleteFunc(g.Topics, func(t kmsg.OffsetFetchResponseGroupTopic) bool {
				if topicOK(t.Topic) {
					return false
				}
				for j := range t.Partitions {
					t.Partitions[j].ErrorCode, t.Partitions[j].Offset, t.Partitions[j].Metadata = codeTopic, -1, nil
				}
				return !named[g.Group]
			})
		}
	})
	return nil
}

// authorizeConfigs: topics need op on the topic (TOPIC_AUTHORIZATION_FAILED), broker resources op on
// the cluster (CLUSTER_AUTHORIZATION_FAILED).
func (b *Broker) authorizeConfigs(c *call, op int8, post *[]func(kmsg.Response)) kmsg.Response {
	code := func(rt kmsg.ConfigResourceType, name string) int16 {
		switch rt {
		case kmsg.ConfigResourceTypeTopic:
			if !b.authorize(c, resTopic, op, name) {
				return kerr.TopicAuthorizationFailed.Code
			}
		default:
			if !b.authorize(c, resCluster, op, clusterResource) {
				return kerr.ClusterAuthorizationFailed.Code
			}
		}
		return 0
	}
	type refusal struct {
		rt   kmsg.ConfigResourceType
		name string
		code int16
	}
	var refused []refusal
	keep := func(rt kmsg.ConfigResourceType, name string) bool {
		if cd := code(rt, name); cd != 0 {
			refused = append(refused, refusal{rt, name, cd})
			return false
		}
		return true
	}
	var left int
	switch req := c.req.(type) {
	case *kmsg.DescribeConfigsRequest:
		req.Resources = slices.DeleteFunc(req.Resources, func(r kmsg.DescribeConfigsRequestResource) bool { return !keep(r.ResourceType, r.ResourceName) })
		left = len(req.Resources)
	case *kmsg.AlterConfigsRequest:
		req.Resources = slices.DeleteFunc(req.Resources, func(r kmsg.AlterConfigsRequestResource) bool { return !keep(r.ResourceType, r.ResourceName) })
		left = len(req.Resources)
	case *kmsg.IncrementalAlterConfigsRequest:
		req.Resources = slices.DeleteFunc(req.Resources, func(r kmsg.IncrementalAlterConfigsRequestResource) bool { return !keep(r.ResourceType, r.ResourceName) })
		left = len(req.Resources)
	}
	if len(refused) == 0 {
		return nil
	}
	add := func(r kmsg.Response) {
		for _, f := range refused {
			switch r := r.(type) {
			case *kmsg.DescribeConfigsResponse:
				e := kmsg.NewDescribeConfigsResponseResource()
				e.ResourceType, e.ResourceName, e.ErrorCode = f.rt, f.name, f.code
				r.Resources = append(r.Resources, e)
			case *kmsg.AlterConfigsResponse:
				e := kmsg.NewAlterConfigsResponseResource()
				e.ResourceType, e.ResourceName, e.ErrorCode = f.rt, f.name, f.code
				r.Resources = append(r.Resources, e)
			case *kmsg.IncrementalAlterConfigsResponse:
				e := kmsg.NewIncrementalAlterConfigsResponseResource()
				e.ResourceType, e.ResourceName, e.ErrorCode = f.rt, f.name, f.code
				r.Resources = append(r.Resources, e)
			}
		}
	}
	if left == 0 {
		r := c.req.ResponseKind()
		add(r)
		return r
	}
	*post = append(*post, add)
	return nil
}

// setTopLevelError sets a response's top-level ErrorCode field, where it has one.
func setTopLevelError(r kmsg.Response, code int16) {
	if f := reflect.ValueOf(r).Elem().FieldByName("ErrorCode"); f.IsValid() && f.Kind() == reflect.Int16 {
		f.SetInt(int64(code))
	}
}

// splitTopics removes from the request's topics those code refuses (non-zero) and returns the step
// that puts them back into the response with that code: on every partition asked for, or on the topic
// when the response has no partitions. It works on kmsg's shared shape (request Topics []{Topic,
// Partitions []{Partition} or []int32}, or TopicNames []string; response Topics []{Topic, Partitions
// []{Partition, ErrorCode}} or []{Topic, ErrorCode}). post is nil when nothing was refused; emptied
// reports that no topic is left (the handler need not run).
func splitTopics(req kmsg.Request, code func(string) int16) (post func(kmsg.Response), emptied bool) {
	rv := reflect.ValueOf(req).Elem()
	field := rv.FieldByName("Topics")
	if req.Key() == int16(kmsg.DeleteTopics) && req.GetVersion() < 6 {
		field = rv.FieldByName("TopicNames")
	}
	if !field.IsValid() || field.Kind() != reflect.Slice {
		return nil, false
	}
	type refusal struct {
		name  string
		parts []int32
		code  int16
	}
	var refused []refusal
	kept := reflect.MakeSlice(field.Type(), 0, field.Len())
	for i := 0; i < field.Len(); i++ {
		t := field.Index(i)
		name := stringOf(t)
		if t.Kind() == reflect.Struct {
			name = stringOf(t.FieldByName("Topic"))
		}
		cd := code(name)
		if cd == 0 {
			kept = reflect.Append(kept, t)
			continue
		}
		r := refusal{name: name, code: cd}
		if t.Kind() == reflect.Struct {
			if ps := t.FieldByName("Partitions"); ps.IsValid() && ps.Kind() == reflect.Slice {
				for j := 0; j < ps.Len(); j++ {
					p := ps.Index(j)
					if p.Kind() == reflect.Struct {
						p = p.FieldByName("Partition")
					}
					r.parts = append(r.parts, int32(p.Int()))
				}
			}
		}
		refused = append(refused, r)
	}
	if len(refused) == 0 {
		return nil, false
	}
	field.Set(kept)
	return func(resp kmsg.Response) {
		topics := reflect.ValueOf(resp).Elem().FieldByName("Topics")
		if !topics.IsValid() || topics.Kind() != reflect.Slice {
			return
		}
		for _, r := range refused {
			t := newDefault(topics.Type().Elem())
			setString(t.FieldByName("Topic"), r.name)
			if ps := t.FieldByName("Partitions"); ps.IsValid() && ps.Kind() == reflect.Slice {
				for _, p := range r.parts {
					pv := newDefault(ps.Type().Elem())
					pv.FieldByName("Partition").SetInt(int64(p))
					pv.FieldByName("ErrorCode").SetInt(int64(r.code))
					ps.Set(reflect.Append(ps, pv))
				}
			} else if ec := t.FieldByName("ErrorCode"); ec.IsValid() {
				ec.SetInt(int64(r.code))
			}
			topics.Set(reflect.Append(topics, t))
		}
	}, kept.Len() == 0
}

// newDefault makes a kmsg struct with its defaults (its Default method).
func newDefault(t reflect.Type) reflect.Value {
	p := reflect.New(t)
	if d, ok := p.Interface().(interface{ Default() }); ok {
		d.Default()
	}
	return p.Elem()
}

func stringOf(v reflect.Value) string {
	switch v.Kind() {
	case reflect.String:
		return v.String()
	case reflect.Pointer:
		if !v.IsNil() && v.Elem().Kind() == reflect.String {
			return v.Elem().String()
		}
	}
	return ""
}

func setString(v reflect.Value, s string) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Pointer:
		v.Set(reflect.ValueOf(&s))
	}
}

// listenerAddresses points a client of a TLS or SASL listener at the same listener of every broker
// (Metadata, FindCoordinator, DescribeCluster name addresses), as Kafka answers with the addresses
// of the listener the request came through. A broker without that listener keeps its plaintext port.
func (b *Broker) listenerAddresses(resp kmsg.Response, listenerPort func(quorum.BrokerInfo) int32) {
	brokers := b.ctl.Metadata().Brokers
	port := func(node, p int32) int32 {
		if bi, ok := brokers[node]; ok {
			if lp := listenerPort(bi); lp > 0 {
				return lp
			}
		}
		return p
	}
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		for i := range r.Brokers {
			r.Brokers[i].Port = port(r.Brokers[i].NodeID, r.Brokers[i].Port)
		}
	case *kmsg.DescribeClusterResponse:
		for i := range r.Brokers {
			r.Brokers[i].Port = port(r.Brokers[i].NodeID, r.Brokers[i].Port)
		}
	case *kmsg.FindCoordinatorResponse:
		if r.NodeID >= 0 {
			r.Port = port(r.NodeID, r.Port)
		}
		for i := range r.Coordinators {
			if r.Coordinators[i].NodeID >= 0 {
				r.Coordinators[i].Port = port(r.Coordinators[i].NodeID, r.Coordinators[i].Port)
			}
		}
	}
}
