// Package buildinfo says which source a tpcd binary was built from: the
// module version, the commit, its time and whether the tree had
// uncommitted changes.
//
// The Go toolchain records the commit itself (runtime/debug.ReadBuildInfo)
// when it builds inside a git checkout. It records nothing when building
// with -buildvcs=false, from a source archive, or in a linked git worktree
// (go only recognises a .git directory, not the .git file of a worktree);
// for those builds `make build` passes the same facts with -ldflags -X into
// the variables below. What the toolchain recorded wins over them.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Set with -ldflags "-X github.com/tpcd/tpcd/buildinfo.revision=..." (see
// the Makefile's build target). Strings only: -X cannot set other types.
var (
	version  string // a release version such as v1.2.0
	revision string // the full commit hash
	vcsTime  string // the commit's time, RFC 3339
	modified string // "true" if the tree had uncommitted changes
)

// Info describes a build. Empty fields are unknown.
type Info struct {
	// Version is the module's version ("v1.2.0", or a pseudo-version for
	// `go install` of a commit); empty for a build of a checkout.
	Version string
	// Revision is the commit hash, Time its commit time.
	Revision string
	Time     time.Time
	// Modified is set when the tree had uncommitted changes.
	Modified bool
	// Go is the toolchain's version, Platform GOOS/GOARCH.
	Go       string
	Platform string
}

// Read describes the running binary.
func Read() Info {
	bi, _ := debug.ReadBuildInfo()
	return From(bi, Linked{Version: version, Revision: revision, Time: vcsTime, Modified: modified})
}

// Linked are the values passed with -ldflags -X, as strings.
type Linked struct {
	Version, Revision, Time, Modified string
}

// From combines what the toolchain recorded (bi, which may be nil) with
// the values given at link time; the toolchain's win.
func From(bi *debug.BuildInfo, l Linked) Info {
	info := Info{Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	settings := map[string]string{}
	if bi != nil {
		if bi.GoVersion != "" {
			info.Go = bi.GoVersion
		}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			info.Version = v
		}
	}
	if info.Version == "" {
		info.Version = l.Version
	}
	info.Revision = firstOf(settings["vcs.revision"], l.Revision)
	if t, err := time.Parse(time.RFC3339, firstOf(settings["vcs.time"], l.Time)); err == nil {
		info.Time = t.UTC()
	}
	info.Modified = firstOf(settings["vcs.modified"], l.Modified) == "true"
	return info
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// String is the one line `tpcd --version` prints, e.g.
//
//	tpcd 86a984282533 (2026-12-05 19:24:55 UTC, modified) go1.26.8 linux/amd64
//	tpcd v1.2.0 (86a984282533, 2026-12-05 19:24:55 UTC) go1.26.8 linux/amd64
//	tpcd (commit unknown: built without version control information) go1.26.8 linux/amd64
func (i Info) String() string {
	var b strings.Builder
	b.WriteString("tpcd ")
	var details []string
	switch {
	case i.Version != "" && i.Revision != "":
		b.WriteString(i.Version)
		details = append(details, short(i.Revision))
	case i.Version != "":
		b.WriteString(i.Version)
	case i.Revision != "":
		b.WriteString(short(i.Revision))
	}
	if !i.Time.IsZero() {
		details = append(details, i.Time.Format("2006-01-02 15:04:05 UTC"))
	}
	if i.Modified {
		details = append(details, "modified")
	}
	if i.Version == "" && i.Revision == "" {
		details = append(details, "commit unknown: built without version control information")
	}
	if len(details) > 0 {
		if i.Version != "" || i.Revision != "" {
			b.WriteByte(' ')
		}
		b.WriteString("(" + strings.Join(details, ", ") + ")")
	}
	fmt.Fprintf(&b, " %s %s", i.Go, i.Platform)
	return b.String()
}

// short abbreviates a commit hash as git's log does by default at this
// size of history, long enough to stay unique for years.
func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
