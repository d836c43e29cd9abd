package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/tpcd/tpcd/rpc"
)

// Options configure a client run.
type Options struct {
	// Coordinator is the coordinator's HOST:PORT.
	Coordinator string
	// Standbys are the HOST:PORT of coordinators that take its place when
	// it goes (tpcd coordinator --lease).
	Standbys []string
	Format   Format
	// Continue keeps a script going after a failed command; the run still
	// ends in an error if any failed.
	Continue bool
	// Stdout receives results, Stderr errors and notices. Defaults: the
	// process's.
	Stdout, Stderr io.Writer
	// Progress draws a progress bar on Stderr during a load. Set it only
	// when Stderr is a terminal.
	Progress bool
	// Terminal, when set, is the terminal Stdout writes to: output taller
	// than it goes through a pager (table format), and \x auto expands
	// tables wider than it. Leave it nil when Stdout is no
	// terminal: then nothing is paged.
	Terminal *os.File
	// HistoryFile keeps the interactive history; "" means the default
	// (DefaultHistoryFile). NoHistory keeps none.
	HistoryFile string
	NoHistory   bool
	// ReconnectWait, Token and TLS: see SessionOptions.
	ReconnectWait time.Duration
	Token         string
	TLS           *tls.Config
	Logger        *slog.Logger
}

func (o *Options) defaults() {
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Format == "" {
		o.Format = FormatTable
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// ErrFailed is wrapped by the error a script run returns when a command
// failed; the command's own error was printed already.
var ErrFailed = errors.New("a command failed")

// runner runs commands of the client language against one session.
type runner struct {
	opts   Options
	sess   *Session
	pr     *Printer
	tables tableNames // for completion
}

func newRunner(opts Options) *runner {
	opts.defaults()
	pr := &Printer{Format: opts.Format, Out: opts.Stdout, Err: opts.Stderr, Pager: &Pager{Mode: PagerOn}}
	if tm := opts.Terminal; tm != nil {
		pr.Width = func() int {
			cols, _, err := term.GetSize(int(tm.Fd()))
			if err != nil {
				return 0
			}
			return cols
		}
		if opts.Format == FormatTable {
			pr.Pager = NewPager(tm)
		}
	}
	r := &runner{opts: opts, pr: pr}
	r.sess = NewSession(opts.Coordinator, SessionOptions{
		Notice: pr.Notice, ReconnectWait: opts.ReconnectWait, Logger: opts.Logger, Token: opts.Token, TLS: opts.TLS, Standbys: opts.Standbys,
	})
	return r
}

// run executes one complete command and prints its outcome. It reports
// whether the command asked to quit, and the command's error (printed
// already).
func (r *runner) run(ctx context.Context, c Complete, where string) (quit bool, err error) {
	cmd, err := ParseCommand(c.Text)
	if err != nil {
		r.fail(c.Text, 0, err, where)
		return false, err
	}
	var res *Result
	switch cmd.Kind {
	case CmdQuit:
		return true, nil
	case CmdHelp:
		text, herr := HelpText(cmd.Topic)
		if herr != nil {
			err = herr
			break
		}
		res = &Result{Kind: CmdHelp, Value: map[string]string{"text": text}, Text: text}
	case CmdSet:
		res = r.set(cmd)
	case CmdLoad:
		start := time.Now()
		res, err = r.load(ctx, *cmd.Load)
		r.pr.Took(time.Since(start))
	default:
		start := time.Now()
		res, err = r.sess.Do(ctx, cmd)
		r.pr.Took(time.Since(start))
		r.tables.saw(cmd.Kind, res, err)
	}
	// JSON gives a failed command its error object only, so that every
	// command makes exactly one line.
	if res != nil && (err == nil || r.pr.Format != FormatJSON) {
		r.pr.Result(res)
	}
	if err != nil {
		r.fail(c.Text, cmd.Kind, err, where)
	}
	return false, err
}

// set changes a display setting and says what it is now, in psql's
// words.
func (r *runner) set(cmd Command) *Result {
	pr := r.pr
	switch cmd.Setting {
	case "timing":
		pr.Timing = cmd.Value == "on" || cmd.Value == "" && !pr.Timing
	case "expanded":
		switch {
		case cmd.Value == "off" || cmd.Value == "" && pr.Expanded != "":
			pr.Expanded = ""
		case cmd.Value == "":
			pr.Expanded = ExpandedOn
		default:
			pr.Expanded = cmd.Value
		}
	case "pager":
		switch {
		case cmd.Value != "":
			pr.Pager.Mode = cmd.Value
		case pr.Pager.Mode == PagerOff:
			pr.Pager.Mode = PagerOn
		default:
			pr.Pager.Mode = PagerOff
		}
	}
	var text string
	var value any
	switch cmd.Setting {
	case "timing":
		text, value = "Timing is off.", pr.Timing
		if pr.Timing {
			text = "Timing is on."
		}
	case "expanded":
		text, value = "Expanded display is off.", "off"
		switch pr.Expanded {
		case ExpandedOn:
			text, value = "Expanded display is on.", ExpandedOn
		case ExpandedAuto:
			text, value = "Expanded display is used automatically.", ExpandedAuto
		}
	case "pager":
		value = pr.Pager.Mode
		switch pr.Pager.Mode {
		case PagerOff:
			text = "Pager usage is off."
		case PagerAlways:
			text = "Pager is always used."
		default:
			text = "Pager is used for long output."
		}
	}
	return &Result{Kind: CmdSet, Value: map[string]any{cmd.Setting: value}, Text: text}
}

func (r *runner) fail(input string, kind Kind, err error, where string) {
	if where != "" {
		err = fmt.Errorf("%s: %w", where, err)
	}
	r.pr.Error(input, kind, err)
}

func (r *runner) load(ctx context.Context, lo LoadOptions) (*Result, error) {
	var progress io.Writer
	if r.opts.Progress {
		progress = r.opts.Stderr
	}
	sum, err := Load(ctx, r.sess, lo, progress)
	if sum == nil {
		return nil, err
	}
	return &Result{Kind: CmdLoad, Value: sum, Text: sum.String()}, err
}

// finish rolls back what the run left open and closes the session.
func (r *runner) finish(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	r.sess.Finish(ctx)
	r.sess.Close()
}

// RunScript runs the commands read from in, non-interactively: results in
// the chosen format, no prompts, and (unless opts.Continue) a stop at the
// first failed command. name labels error messages with line numbers
// ("" for none, as for -c). A transaction left open at the end is rolled
// back. The error it returns carries the exit status (ScriptError).
func RunScript(ctx context.Context, opts Options, in io.Reader, name string) error {
	r := newRunner(opts)
	defer r.finish(ctx)
	var sp Splitter
	br := bufio.NewReader(in)
	lineNo, startLine := 0, 1
	var res ScriptError
	do := func(c Complete) bool {
		where := ""
		if name != "" {
			where = fmt.Sprintf("%s:%d", name, startLine)
		}
		quit, err := r.run(ctx, c, where)
		if err != nil {
			res.failed(err)
		}
		return quit || (err != nil && !opts.Continue) || ctx.Err() != nil
	}
	for {
		line, rerr := br.ReadString('\n')
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return fmt.Errorf("read commands: %w", rerr)
		}
		if line == "" && rerr != nil {
			break
		}
		lineNo++
		if !sp.Pending() {
			startLine = lineNo
		}
		for _, c := range sp.Feed(strings.TrimRight(line, "\r\n")) {
			if do(c) {
				return res.result(ctx, opts.Continue)
			}
			startLine = lineNo
		}
		if rerr != nil {
			break
		}
	}
	if c, ok := sp.Flush(); ok {
		do(c)
	}
	return res.result(ctx, opts.Continue)
}

// Exit statuses of tpcd client, psql's: 0 when everything worked.
const (
	// ExitFailed: a command failed and the run went on (--continue, or a
	// load), or the client itself failed.
	ExitFailed = 1
	// ExitConnection: no coordinator answered (unreachable, the
	// connection lost, an address that is not a coordinator, a refused
	// token or TLS set-up).
	ExitConnection = 2
	// ExitStopped: a script stopped at a failed command, or was
	// interrupted (Ctrl-C).
	ExitStopped = 3
)

// ScriptError ends a run in which a command failed. The command's error
// was printed when it happened; this only sets the exit status
// (ExitCode, which kong uses).
type ScriptError struct {
	Failed int
	First  error
	// Stopped is set when the script ended before its last command.
	Stopped bool
	// Interrupted is set when that was because of Ctrl-C (or SIGTERM).
	Interrupted bool
	// Lost is set when a command failed because no coordinator answered.
	Lost bool
}

func (e *ScriptError) failed(err error) {
	e.Failed++
	if e.First == nil {
		e.First = err
	}
	if connectionFailed(err) {
		e.Lost = true
	}
}

// result is the run's error, nil if nothing failed.
func (e *ScriptError) result(ctx context.Context, cont bool) error {
	e.Interrupted = ctx.Err() != nil
	e.Stopped = e.Interrupted || (e.Failed > 0 && !cont)
	if e.Failed == 0 && !e.Interrupted {
		return nil
	}
	return e
}

func (e *ScriptError) Error() string {
	switch {
	case e.Interrupted:
		return "interrupted"
	case e.Stopped:
		return "stopped at the first failed command"
	case e.Failed == 1:
		return "1 command failed"
	}
	return fmt.Sprintf("%d commands failed", e.Failed)
}

// ExitCode is the status the process exits with: 2 if a command found no
// coordinator, else 3 if the script stopped early, else 1.
func (e *ScriptError) ExitCode() int {
	switch {
	case e.Lost:
		return ExitConnection
	case e.Stopped:
		return ExitStopped
	}
	return ExitFailed
}

// Unwrap returns the first command's error.
func (e *ScriptError) Unwrap() error { return e.First }

// Is makes errors.Is(err, ErrFailed) true.
func (e *ScriptError) Is(target error) bool { return target == ErrFailed }

// connectionFailed reports whether err means that no coordinator answered
// the command: psql's "connection to the server went bad".
func connectionFailed(err error) bool {
	var werr *WrongAddrError
	switch {
	case errors.As(err, &werr):
		return true
	case errors.Is(err, context.Canceled):
		return false
	case rpc.IsCode(err, rpc.CodeUnauthorized):
		return true
	}
	return rpc.IsTransport(err)
}

// LoadCommand runs one load as the command line's `tpcd client load` does:
// the summary in the chosen format, errors on one line, an error return if
// the load failed.
func LoadCommand(ctx context.Context, opts Options, lo LoadOptions) error {
	r := newRunner(opts)
	defer r.finish(ctx)
	res, err := r.load(ctx, lo)
	if res != nil && (err == nil || r.pr.Format != FormatJSON) {
		r.pr.Result(res)
	}
	if err != nil {
		r.pr.Error("", CmdLoad, err)
		var res ScriptError
		res.failed(err)
		return &res
	}
	return nil
}
