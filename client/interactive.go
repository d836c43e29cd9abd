package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/peterh/liner"

	"github.com/tpcd/tpcd/engine"
)

// DefaultHistoryFile is where the interactive history lives unless told:
// $XDG_STATE_HOME/tpcd/history, else ~/.local/state/tpcd/history. It is ""
// when neither the variable nor a home directory is known.
func DefaultHistoryFile() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "tpcd", "history")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return ""
	}
	return filepath.Join(home, ".local", "state", "tpcd", "history")
}

// RunInteractive runs the shell on the process's terminal (standard input
// and output must both be terminals): a prompt that shows the open
// transaction, line editing, history kept in a file, Tab completion of
// commands, nodes, SQL keywords and the participants' tables. Ctrl-C
// cancels the line being typed, or the command running; Ctrl-D or quit
// leaves, rolling back an open transaction. Errors are printed and never
// end the session; RunInteractive returns an error only when the terminal
// fails.
func RunInteractive(ctx context.Context, opts Options) error {
	if opts.Terminal == nil {
		// Standard output is a terminal here: page and size for it even
		// when the caller did not say so.
		opts.Terminal = os.Stdout
	}
	r := newRunner(opts)
	// Ctrl-C interrupts a running command, not the shell: the shell takes
	// SIGINT itself and works under a context the caller's SIGINT handling
	// cannot cancel. SIGTERM still ends it.
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	sigint := make(chan os.Signal, 1)
	sigterm := make(chan os.Signal, 1)
	signal.Notify(sigint, os.Interrupt)
	signal.Notify(sigterm, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigint)
	defer signal.Stop(sigterm)

	line := liner.NewLiner()
	sh := &shell{r: r, line: line, sigint: sigint, base: base}
	sh.setup()

	done := make(chan error, 1)
	go func() { done <- sh.loop(base) }()
	var err error
	select {
	case err = <-done:
	case sig := <-sigterm:
		// Stop a running command and wait for it; the loop may instead be
		// blocked reading the terminal, and is left there.
		cancel()
		sh.busy.Lock()
		defer sh.busy.Unlock()
		fmt.Fprintln(r.opts.Stdout)
		err = fmt.Errorf("%s", sig)
	}
	line.Close()
	sh.saveHistory()
	r.finish(ctx)
	return err
}

type shell struct {
	r      *runner
	line   *liner.State
	sigint chan os.Signal
	// base is the context commands run under; completion's questions too.
	base context.Context
	// sp cuts the typed lines into commands; completion reads what it
	// holds of a statement typed over several lines.
	sp   Splitter
	hist string
	// lastEntry is the newest history entry.
	lastEntry string
	// busy is held while a command runs, so that SIGTERM can wait for it.
	busy sync.Mutex
}

func (sh *shell) setup() {
	sh.line.SetCtrlCAborts(true)
	sh.line.SetTabCompletionStyle(liner.TabPrints)
	sh.line.SetWordCompleter(sh.complete)
	if sh.r.opts.NoHistory {
		return
	}
	sh.hist = sh.r.opts.HistoryFile
	if sh.hist == "" {
		sh.hist = DefaultHistoryFile()
	}
	if sh.hist == "" {
		return
	}
	if f, err := os.Open(sh.hist); err == nil {
		_, _ = sh.line.ReadHistory(f)
		f.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		sh.r.pr.Notice(fmt.Sprintf("history %s: %v", sh.hist, err))
	}
}

// loop reads and runs commands until quit, Ctrl-D or a terminal failure.
func (sh *shell) loop(ctx context.Context) error {
	r := sh.r
	var werr *WrongAddrError
	if err := r.sess.Connect(ctx); errors.As(err, &werr) {
		return werr // no use prompting: nothing would work
	} else if err != nil {
		r.pr.Notice(fmt.Sprintf("cannot reach the coordinator yet: %s (commands will retry)", describe(err, r.sess.Addr())))
	} else {
		r.pr.Notice(fmt.Sprintf("connected to coordinator %s: %d participants (@0..@%d), epoch %d. Type help for commands.",
			r.sess.Addr(), r.sess.Participants(), r.sess.Participants()-1, r.sess.Epoch()))
	}
	sp := &sh.sp
	for {
		sh.busy.Lock()
		prompt := sh.prompt(sp.Pending())
		sh.busy.Unlock()
		text, err := sh.line.Prompt(prompt)
		switch {
		case errors.Is(err, liner.ErrPromptAborted):
			sp.Reset()
			continue
		case errors.Is(err, io.EOF):
			if sp.Pending() {
				// Ctrl-D on an empty continuation line drops the command.
				sp.Reset()
				fmt.Fprintln(r.opts.Stdout)
				continue
			}
			fmt.Fprintln(r.opts.Stdout)
			return nil
		case err != nil:
			return fmt.Errorf("read the terminal: %w", err)
		}
		for _, c := range sp.Feed(text) {
			var nm *NodeMissingError
			if _, perr := ParseCommand(c.Text); errors.As(perr, &nm) {
				if sh.seedDialogue(ctx, nm.SQL) {
					return nil
				}
				continue
			}
			sh.remember(c.History)
			if sh.runOne(ctx, c) {
				return nil
			}
		}
	}
}

// runOne runs a command with Ctrl-C bound to cancelling it.
func (sh *shell) runOne(ctx context.Context, c Complete) (quit bool) {
	// A Ctrl-C pressed while no command ran is stale.
	select {
	case <-sh.sigint:
	default:
	}
	sh.busy.Lock()
	defer sh.busy.Unlock()
	if ctx.Err() != nil {
		return true
	}
	cctx, cancel := context.WithCancel(ctx)
	stop := make(chan struct{})
	go func() {
		select {
		case <-sh.sigint:
			cancel()
		case <-stop:
		}
	}()
	quit, _ = sh.r.run(cctx, c, "")
	close(stop)
	cancel()
	return quit
}

// prompt shows the open transaction: "tpcd> ", "tpcd tx 7> ", and
// "tpcd tx 7 (failed)> " once a statement failed; a command that goes on
// over several lines gets "...> " at the same width.
func (sh *shell) prompt(continued bool) string {
	p := "tpcd"
	if tx := sh.r.sess.Tx(); tx != 0 {
		p += " tx " + strconv.FormatUint(uint64(tx), 10)
		if sh.r.sess.TxFailed() {
			p += " (failed)"
		}
	}
	if continued {
		return strings.Repeat(" ", max(len(p)-3, 0)) + "...> "
	}
	return p + "> "
}

// remember adds a command to the history, in memory and in the file. The
// file is appended to at once so that a killed shell loses nothing; it is
// rewritten, trimmed, on exit.
func (sh *shell) remember(entry string) {
	if strings.TrimSpace(entry) == "" || entry == sh.lastEntry {
		return // liner skips a repeat too
	}
	sh.lastEntry = entry
	sh.line.AppendHistory(entry)
	if sh.hist == "" {
		return
	}
	if err := os.MkdirAll(filepath.Dir(sh.hist), 0o700); err != nil {
		return
	}
	f, err := os.OpenFile(sh.hist, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	fmt.Fprintln(f, entry)
	f.Close()
}

func (sh *shell) saveHistory() {
	if sh.hist == "" {
		return
	}
	if err := os.MkdirAll(filepath.Dir(sh.hist), 0o700); err != nil {
		sh.r.pr.Notice(fmt.Sprintf("history %s: %v", sh.hist, err))
		return
	}
	tmp := sh.hist + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		sh.r.pr.Notice(fmt.Sprintf("history %s: %v", sh.hist, err))
		return
	}
	_, werr := sh.line.WriteHistory(f)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, sh.hist)
	}
	if werr != nil {
		os.Remove(tmp)
		sh.r.pr.Notice(fmt.Sprintf("history %s: %v", sh.hist, werr))
	}
}

// The seed client's questions, word for word, so that its users' answers
// fit.
const (
	seedNodePrompt    = "On this node #: "
	seedAnotherPrompt = "Send another query request? (y/n) "
)

// seedDialogue runs a statement typed without a node the way the seed's
// client runs every statement: it asks which node, runs it there (in the
// open transaction if there is one, else as the seed's EXECUTE, in the
// coordinator's batch), and asks whether to send another; no ends the
// shell, as it ends the seed's client. Enter goes on: a tpcd user who
// only wanted the statement run should not lose the shell to a key press.
// It reports whether to quit.
func (sh *shell) seedDialogue(ctx context.Context, sql string) (quit bool) {
	r := sh.r
	var node engine.NodeID
	for {
		ans, err := sh.line.Prompt(seedNodePrompt)
		if err != nil { // Ctrl-C, Ctrl-D or a terminal failure: drop the statement
			if errors.Is(err, io.EOF) {
				fmt.Fprintln(r.opts.Stdout)
			}
			return false
		}
		ans = strings.TrimSpace(ans)
		if ans == "" {
			return false
		}
		if !strings.HasPrefix(ans, "@") {
			ans = "@" + ans
		}
		n, perr := parseNode(ans)
		if perr == nil && r.sess.Participants() > 0 && int(n) >= r.sess.Participants() {
			perr = fmt.Errorf("there is no node %d: the participants are @0..@%d", n, r.sess.Participants()-1)
		}
		if perr == nil {
			node = n
			break
		}
		r.pr.Error(ans, 0, perr)
	}
	text := fmt.Sprintf("execute @%d %s", node, sql)
	if r.sess.Tx() != 0 {
		text = fmt.Sprintf("exec @%d %s", node, sql)
	}
	// The history keeps the command tpcd's own language runs it as, so
	// that Up brings back something that runs without the questions.
	sh.remember(text + ";")
	if sh.runOne(ctx, Complete{Text: text, History: text + ";"}) {
		return true
	}
	ans, err := sh.line.Prompt(seedAnotherPrompt)
	switch {
	case errors.Is(err, io.EOF):
		fmt.Fprintln(r.opts.Stdout)
		return true
	case err != nil:
		return false
	}
	a := strings.ToLower(strings.TrimSpace(ans))
	return a == "n" || a == "no"
}
