package quorum

import (
	"encoding/json"
	"fmt"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// A controllerCommand is one kind of controller log entry: a type per op, in the file of its concern
// (cluster.go, topics.go, reassign.go, liveness.go, security.go), registered in commandTypes. Adding
// an op is one type and one line there. Anything random (ids) or clock-based is chosen by the
// proposer, so applying is deterministic on every voter.
type controllerCommand interface {
	// op names the command on the wire (the entry's "op").
	op() string
	// validate checks the command before it is proposed (the proposer's side; apply checks it
	// against the Metadata).
	validate() error
	// apply returns the Metadata after the command (nil: unchanged) and the proposer's result.
	// md is immutable: change a copy.
	apply(md *Metadata) (*Metadata, sm.Result)
}

// A liveCommand changes the liveness table rather than the Metadata (a heartbeat).
type liveCommand interface {
	applyLive(l *liveness) sm.Result
}

// commandTypes maps each op to a constructor of its command.
var commandTypes = registerCommands(
	func() controllerCommand { return new(bootstrapCmd) },
	func() controllerCommand { return new(registerBrokerCmd) },
	func() controllerCommand { return new(allocateProducerIDsCmd) },
	func() controllerCommand { return new(createTopicCmd) },
	func() controllerCommand { return new(deleteTopicCmd) },
	func() controllerCommand { return new(createPartitionsCmd) },
	func() controllerCommand { return new(alterConfigCmd) },
	func() controllerCommand { return new(deleteRecordsCmd) },
	func() controllerCommand { return new(heartbeatCmd) },
	func() controllerCommand { return new(reportLeadersCmd) },
	func() controllerCommand { return new(reassignCmd) },
	func() controllerCommand { return new(reassignDoneCmd) },
	func() controllerCommand { return new(scramUpsertCmd) },
	func() controllerCommand { return new(scramDeleteCmd) },
	func() controllerCommand { return new(createACLsCmd) },
	func() controllerCommand { return new(deleteACLsCmd) },
)

func registerCommands(constructors ...func() controllerCommand) map[string]func() controllerCommand {
	m := make(map[string]func() controllerCommand, len(constructors))
	for _, c := range constructors {
		op := c().op()
		if _, dup := m[op]; dup {
			panic("quorum: controller op registered twice: " + op)
		}
		m[op] = c
	}
	return m
}

// The wire form of a command is a JSON object (small, rare, readable in a log dump): "op" first,
// then the command's own fields, as the untyped command of earlier versions wrote it (the replay
// test's log pins it; data directories hold it).

// encodeCommand returns cmd's log entry.
func encodeCommand(cmd controllerCommand) ([]byte, error) {
	body, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	if len(body) < 2 || body[0] != '{' {
		return nil, fmt.Errorf("quorum: %s encodes as %.20s, not an object", cmd.op(), body)
	}
	op, _ := json.Marshal(cmd.op())
	out := make([]byte, 0, len(`{"op":,`)+len(op)+len(body))
	out = append(append(append(out, `{"op":`...), op...), ',')
	if len(body) == 2 { // {}: no fields
		return append(out[:len(out)-1], '}'), nil
	}
	return append(out, body[1:]...), nil
}

// errUnknownOp: an entry of an op this build does not know.
type errUnknownOp string

func (e errUnknownOp) Error() string { return "unknown op " + string(e) }

// decodeCommand reads a log entry.
func decodeCommand(data []byte) (controllerCommand, error) {
	var head struct {
		Op string `json:"op"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, err
	}
	newCmd, ok := commandTypes[head.Op]
	if !ok {
		return nil, errUnknownOp(head.Op)
	}
	cmd := newCmd()
	if err := json.Unmarshal(data, cmd); err != nil {
		return nil, err
	}
	return cmd, nil
}

// Result codes in sm.Result.Value; data (a created topic, a first producer id) goes in Data.
const (
	resultOK uint64 = iota
	resultTopicExists
	resultUnknownTopic
	resultInvalidPartitions
	resultInvalidReplicationFactor
	resultInvalidRequest
	resultUnknownPartition
	resultInvalidReplicas
	resultNoReassignment
)

// resultError maps a non-OK result code to its error.
func resultError(res sm.Result) error {
	switch res.Value {
	case resultTopicExists:
		return ErrTopicExists
	case resultUnknownTopic:
		return ErrUnknownTopic
	case resultInvalidPartitions:
		return ErrInvalidPartitions
	case resultInvalidReplicationFactor:
		return ErrInvalidReplicationFactor
	case resultUnknownPartition:
		return ErrUnknownPartition
	case resultInvalidReplicas:
		if len(res.Data) > 0 {
			return fmt.Errorf("%w: %s", ErrInvalidReplicas, res.Data)
		}
		return ErrInvalidReplicas
	case resultNoReassignment:
		return ErrNoReassignment
	}
	if len(res.Data) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidRequest, res.Data)
	}
	return ErrInvalidRequest
}

func invalid(why string) sm.Result {
	return sm.Result{Value: resultInvalidRequest, Data: []byte(why)}
}

func invalidReplicas(format string, args ...any) sm.Result {
	return sm.Result{Value: resultInvalidReplicas, Data: fmt.Appendf(nil, format, args...)}
}

// noChecks is embedded by commands with nothing to check before proposing.
type noChecks struct{}

func (noChecks) validate() error { return nil }
