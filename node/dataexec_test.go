package node

import (
	"testing"

	"github.com/tpcd/tpcd/engine"
)

func TestProvesWrite(t *testing.T) {
	for _, tc := range []struct {
		tag  string
		rows int64
		want bool
	}{
		{"INSERT 0 1", 1, true},
		{"INSERT 0 0", 0, false},
		{"UPDATE 3", 3, true},
		{"UPDATE 0", 0, false},
		{"DELETE 1", 1, true},
		{"CREATE TABLE", 0, true},
		{"DROP TABLE", 0, true},
		{"SELECT 1", 1, false},
		{"", 0, false},
	} {
		if got := provesWrite(&engine.StmtResult{Tag: tc.tag, RowsAffected: tc.rows}); got != tc.want {
			t.Errorf("provesWrite(%q, %d) = %t, want %t", tc.tag, tc.rows, got, tc.want)
		}
	}
}
