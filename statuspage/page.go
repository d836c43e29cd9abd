package statuspage

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/node"
)

//go:embed page.html.tmpl
var pageSource string

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"nodes": func(ids []engine.NodeID) string {
		if len(ids) == 0 {
			return "–"
		}
		s := make([]string, len(ids))
		for i, id := range ids {
			s[i] = id.String()
		}
		return strings.Join(s, ", ")
	},
	"ago": func(ms int64) string {
		if ms < 0 {
			return "never"
		}
		return (time.Duration(ms) * time.Millisecond).Round(time.Millisecond).String() + " ago"
	},
	"outcome": func(o engine.Outcome) string {
		if o == 0 {
			return "–"
		}
		return o.String()
	},
}).Parse(pageSource))

// Snapshotter returns the coordinator's state as the node last took it
// (node.Coordinator.LatestSnapshot). It is called on every page view, so it
// must read memory only: a page that queried the coordinator's loop per
// view let a flood of views slow every commit.
type Snapshotter func() (node.CoordinatorSnapshot, error)

// Options configure the page.
type Options struct {
	// Refresh is how often the browser reloads the page. Default 2s.
	Refresh time.Duration
	Logger  *slog.Logger
	// Adopted lists the slots the coordinator took over from others that
	// stopped, each served by a coordinator of its own in this process
	// (docs/OPERATIONS.md, "Slots"); nil for a node that adopts none. Like
	// the snapshot, it must read memory only.
	Adopted func() []AdoptedSlot
}

// AdoptedSlot is a slot the coordinator adopted, as the page shows it.
type AdoptedSlot struct {
	Slot int
	// Address is where the slot's own coordinator listens.
	Address string
	// Snapshot is that coordinator's latest; Err says why there is none.
	Snapshot node.CoordinatorSnapshot
	Err      error
}

type view struct {
	node.CoordinatorSnapshot
	Refresh int
	Stamp   string
	Adopted []AdoptedSlot
	// AdoptedInDoubt are the adopted slots' transactions in doubt.
	AdoptedInDoubt []adoptedTx
}

type adoptedTx struct {
	Slot int
	engine.TxSummary
}

// Handler serves the page.
func Handler(snapshot Snapshotter, opts Options) http.Handler {
	if opts.Refresh <= 0 {
		opts.Refresh = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	refresh := max(1, int(opts.Refresh/time.Second))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The page has no scripts and loads nothing: the policy says so, so
		// that an injected tag could not do anything either.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		s, err := snapshot()
		if err != nil {
			opts.Logger.Warn("status page: snapshot failed", "err", err)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Refresh", fmt.Sprint(refresh))
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "coordinator state unavailable: %v\n", err)
			return
		}
		v := view{CoordinatorSnapshot: s, Refresh: refresh, Stamp: s.Taken.UTC().Format("2006-01-02 15:04:05 MST")}
		if opts.Adopted != nil {
			v.Adopted = opts.Adopted()
			for _, a := range v.Adopted {
				for _, tx := range a.Snapshot.InDoubt {
					v.AdoptedInDoubt = append(v.AdoptedInDoubt, adoptedTx{Slot: a.Slot, TxSummary: tx})
				}
			}
		}
		var buf bytes.Buffer
		if err := page.Execute(&buf, v); err != nil {
			opts.Logger.Error("status page: render failed", "err", err)
			http.Error(w, "render failed", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(buf.Bytes())
	})
}
