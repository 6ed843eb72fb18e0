package quorum

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// controllerSM is the controller group's state machine. It holds the metadata as an immutable
// *Metadata replaced on every change (copy-on-write of the maps touched), so readers never lock.
type controllerSM struct {
	c  *Controller
	md *Metadata
}

func (s *controllerSM) Update(e sm.Entry) (sm.Result, error) {
	cmd, err := decodeCommand(e.Cmd)
	if err != nil {
		// A bad entry is committed already; failing here would halt the group forever.
		if unknown := errUnknownOp(""); errors.As(err, &unknown) {
			return invalid(err.Error()), nil
		}
		return invalid("undecodable command"), nil
	}
	if lc, ok := cmd.(liveCommand); ok {
		return lc.applyLive(&s.c.live), nil
	}
	next, res := cmd.apply(s.md)
	if next != nil {
		next.Version = s.md.Version + 1
		s.md = next
		s.c.publish(next)
	}
	return res, nil
}

func (s *controllerSM) Lookup(any) (any, error) { return s.md, nil }

// SaveSnapshot writes the whole metadata as JSON (small: brokers, topics, assignments).
func (s *controllerSM) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	return json.NewEncoder(w).Encode(s.md)
}

func (s *controllerSM) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	md := emptyMetadata()
	if err := json.NewDecoder(r).Decode(md); err != nil {
		return fmt.Errorf("quorum: controller snapshot: %w", err)
	}
	s.md = md
	s.c.publish(md)
	return nil
}

func (s *controllerSM) Close() error { return nil }
