package client

import (
	"fmt"
	"strings"
)

// helpTopics documents each command in one or two lines; help prints them.
var helpTopics = []struct{ name, usage, text string }{
	{"begin", "begin [KEY]", "Open a distributed transaction; the prompt shows its id. KEY, an idempotency key, names it: begin KEY again gets the same open transaction, and status key KEY finds it for a day after it ended."},
	{"exec", "exec @N SQL;   or   @N SQL;", "Run SQL on participant N inside the open transaction. SQL may span lines; it ends at ';'."},
	{"execute", "execute @N SQL;", "Seed form: run SQL on participant N in the coordinator's current batch; every --batch-size statements commit together."},
	{"plain", "plain @N SQL;", "Run SQL alone on participant N as a plain transaction there, committed at once: no coordinator, no two-phase commit, no transaction id (outside an open transaction only)."},
	{"sql", "SQL   (a statement without a node, as in the seed's client)", "The shell asks On this node #:, runs it there (in the open transaction, else as execute), then asks Send another query request? (y/n); n leaves. Scripts need @N."},
	{"commit", "commit", "Commit the open transaction on every participant it touched (two-phase commit)."},
	{"rollback", "rollback", "Abort the open transaction."},
	{"status", "status [TXID | key KEY]", "Where a transaction stands: the open one, else the last one used, else TXID, or the one begun with KEY."},
	{"indoubt", "indoubt", "Transactions past their statements that have not ended: their age, what they wait for and from whom, and why (an unreachable participant)."},
	{"resolve", "resolve TXID", "Retry now what an in-doubt transaction waits for (resend its decision, ask its decider again); the coordinator logs it. It changes no outcome."},
	{"nodes", "nodes", "List the participants and whether the coordinator reaches them."},
	{"load", "load --table T --key COL [--create] [--tx-size N|--atomic] [--append] FILE", "Load a CSV file: row r goes to participant FNV-1a(r.COL) mod N, committed in distributed transactions of --tx-size rows, or with --atomic all in one. A table that holds rows already needs --append. --direct sends the rows straight to the participants."},
	{`\timing`, `\timing [on|off]`, "Say how long each command took (Time: 1.234 ms; time_ms in JSON)."},
	{`\x`, `\x [on|off|auto]`, "Expanded output: each row as a block of column | value lines; auto: when a table is wider than the terminal."},
	{`\pset`, `\pset pager [on|off|always]   \pset expanded [on|off|auto]`, `On a terminal, output taller than it goes through $TPCD_PAGER, else $PAGER, else less (empty: none); off: never; always: even when it fits. \pset expanded is \x.`},
	{"help", `help [COMMAND]   (or \?)`, "This text."},
	{"quit", `quit   (or exit, \q, Ctrl-D)`, "Leave; an open transaction is rolled back."},
}

// HelpText is the help for one command, or for all when topic is empty.
func HelpText(topic string) (string, error) {
	var b strings.Builder
	if topic == "" {
		b.WriteString("Commands (a command without SQL ends at the end of its line; SQL ends at ';'):\n")
		for _, h := range helpTopics {
			fmt.Fprintf(&b, "  %s\n%s\n", h.usage, wrap(h.text, "      ", 78))
		}
		b.WriteString(wrap("Keys: Tab completes commands, SQL keywords and table names; Up/Down recall history; Ctrl-C cancels the line or the running command (in a transaction, rolling it back); Ctrl-D quits.", "", 78))
		return b.String(), nil
	}
	if topic == "@" || strings.HasPrefix(topic, "@") {
		topic = "exec"
	}
	if isSQLWord(topic) {
		topic = "sql"
	}
	switch topic {
	case "exit", `\q`:
		topic = "quit"
	case `\?`:
		topic = "help"
	}
	for _, h := range helpTopics {
		if h.name == topic {
			return h.usage + "\n" + wrap(h.text, "  ", 78), nil
		}
	}
	names := make([]string, len(helpTopics))
	for i, h := range helpTopics {
		names[i] = h.name
	}
	if guess, ok := closest(topic, names); ok {
		return "", fmt.Errorf("no command %q; did you mean %s?", topic, guess)
	}
	return "", fmt.Errorf("no command %q; type help for the list", topic)
}

// wrap breaks text into lines of at most width columns, each starting
// with indent.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	col := 0
	for i, w := range strings.Fields(text) {
		switch {
		case i == 0:
			b.WriteString(indent)
			col = len(indent)
		case col+1+len(w) > width:
			b.WriteString("\n" + indent)
			col = len(indent)
		default:
			b.WriteByte(' ')
			col++
		}
		b.WriteString(w)
		col += len(w)
	}
	return b.String()
}
