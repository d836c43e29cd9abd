package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestFrom(t *testing.T) {
	const rev = "86a984282533d8131f088cd8117df9981955f713"
	platform := " go1.26.8 " + runtime.GOOS + "/" + runtime.GOARCH
	recorded := func(version string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/tpcd/tpcd", Version: version}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	linked := Linked{Version: "v0.9.0", Revision: "ffffffffffffffffffffffffffffffffffffffff", Time: "2025-01-01T00:00:00Z", Modified: "false"}
	for _, tc := range []struct {
		name   string
		bi     *debug.BuildInfo
		linked Linked
		want   string
	}{
		{"checkout, modified", recorded("(devel)", "vcs.revision", rev, "vcs.time", "2026-12-05T19:24:55Z", "vcs.modified", "true"), Linked{},
			"tpcd 86a984282533 (2026-12-05 19:24:55 UTC, modified)" + platform},
		{"go install of a release", recorded("v1.2.0"), Linked{},
			"tpcd v1.2.0" + platform},
		{"release built from its checkout", recorded("v1.2.0", "vcs.revision", rev, "vcs.time", "2026-12-05T19:24:55Z", "vcs.modified", "false"), Linked{},
			"tpcd v1.2.0 (86a984282533, 2026-12-05 19:24:55 UTC)" + platform},
		{"nothing recorded, linked values", recorded("(devel)"), linked,
			"tpcd v0.9.0 (ffffffffffff, 2025-01-01 00:00:00 UTC)" + platform},
		{"the toolchain's record wins", recorded("(devel)", "vcs.revision", rev, "vcs.time", "2026-12-05T19:24:55+01:00", "vcs.modified", "false"), linked,
			"tpcd v0.9.0 (86a984282533, 2026-12-05 18:24:55 UTC)" + platform},
		{"nothing at all", recorded("(devel)"), Linked{},
			"tpcd (commit unknown: built without version control information)" + platform},
	} {
		if got := From(tc.bi, tc.linked).String(); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
	if got := From(nil, Linked{}).Go; got != runtime.Version() {
		t.Errorf("no build info: Go %q, want %q", got, runtime.Version())
	}
}
