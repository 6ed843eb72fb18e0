package main

import (
	"context"
	"errors"
)

func cmdSweep(ctx context.Context, args []string) error { return errors.New("sweep: not yet") }

func cmdCompare(args []string) error { return errors.New("compare: not yet") }
