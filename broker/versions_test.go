package broker

import (
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestProtocolTable pins what ApiVersions advertises, so that a registration moving between files
// or a version cap changed by accident shows up here (change the table on purpose, with the reason
// beside the registration).
func TestProtocolTable(t *testing.T) {
	want := []apiRange{
		{0, 0, 13}, {1, 4, 17}, {2, 0, 6}, {3, 0, 12}, {8, 0, 9}, {9, 0, 9}, {10, 0, 4}, {11, 0, 9},
		{12, 0, 4}, {13, 0, 5}, {14, 0, 5}, {15, 0, 5}, {16, 0, 4}, {18, 0, 4}, {19, 0, 7}, {20, 0, 6}, {21, 0, 2},
		{22, 0, 4}, {23, 0, 4}, {24, 0, 4}, {25, 0, 3}, {26, 0, 4}, {27, 0, 1}, {28, 0, 3}, {32, 0, 4},
		{33, 0, 2}, {35, 0, 4}, {37, 0, 3}, {42, 0, 2}, {43, 0, 2}, {44, 0, 1}, {45, 0, 0}, {46, 0, 0}, {47, 0, 0}, {60, 0, 1},
		{61, 0, 0}, {62, 0, 0}, {65, 0, 0}, {66, 0, 1},
		// Security (issue 16): SaslHandshake, DescribeAcls, CreateAcls, DeleteAcls, SaslAuthenticate,
		// DescribeUserScramCredentials, AlterUserScramCredentials.
		{17, 0, 1}, {29, 0, 3}, {30, 0, 3}, {31, 0, 3}, {36, 0, 2}, {50, 0, 0}, {51, 0, 0},
		// Client quotas (issue 19): DescribeClientQuotas, AlterClientQuotas.
		{48, 0, 1}, {49, 0, 1},
	}
	slices.SortFunc(want, func(a, b apiRange) int { return int(a.key) - int(b.key) })
	got := apiVersionsKeys()
	if len(got) != len(want) {
		t.Fatalf("%d APIs advertised, want %d", len(got), len(want))
	}
	for i, k := range got {
		if w := want[i]; k.ApiKey != w.key || k.MinVersion != w.min || k.MaxVersion != w.max {
			t.Errorf("%s: v%d-%d, want key %d v%d-%d", kmsg.NameForKey(k.ApiKey), k.MinVersion, k.MaxVersion, w.key, w.min, w.max)
		}
	}
	for key, a := range apis {
		if a.serve == nil && key != kmsg.ApiVersions.Int16() && key != kmsg.Produce.Int16() {
			t.Errorf("%s has no handler", kmsg.NameForKey(key))
		}
	}
}
