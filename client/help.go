package client

import (
	"fmt"
	"strings"
)

// helpTopics documents each command in one or two lines; help prints them.
var helpTopics = []struct{ name, usage, text string }{
	{"begin", "begin", "Open a distributed transaction; the prompt shows its id."},
	{"exec", "exec @N SQL;   or   @N SQL;", "Run SQL on participant N inside the open transaction. SQL may span lines; it ends at ';'."},
	{"execute", "execute @N SQL;", "Seed form: run SQL on participant N in the coordinator's current batch; every --batch-size statements commit together."},
	{"commit", "commit", "Commit the open transaction on every participant it touched (two-phase commit)."},
	{"rollback", "rollback", "Abort the open transaction."},
	{"status", "status [TXID]", "Where a transaction stands: the open one, else the last one used, else TXID."},
	{"nodes", "nodes", "List the participants and whether the coordinator reaches them."},
	{"load", "load --table T --key COL [--create] [--tx-size N|--atomic] [--append] FILE", "Load a CSV file: row r goes to participant FNV-1a(r.COL) mod N, committed in distributed transactions of --tx-size rows, or with --atomic all in one. A table that holds rows already needs --append."},
	{"help", "help [COMMAND]", "This text."},
	{"quit", "quit   (or exit, Ctrl-D)", "Leave; an open transaction is rolled back."},
}

// HelpText is the help for one command, or for all when topic is empty.
func HelpText(topic string) (string, error) {
	var b strings.Builder
	if topic == "" {
		b.WriteString("Commands (a command without SQL ends at the end of its line; SQL ends at ';'):\n")
		for _, h := range helpTopics {
			fmt.Fprintf(&b, "  %s\n%s\n", h.usage, wrap(h.text, "      ", 78))
		}
		b.WriteString(wrap("Keys: Tab completes, Up/Down recall history, Ctrl-C cancels the line or the running command, Ctrl-D quits.", "", 78))
		return b.String(), nil
	}
	if topic == "@" || strings.HasPrefix(topic, "@") {
		topic = "exec"
	}
	if topic == "exit" {
		topic = "quit"
	}
	for _, h := range helpTopics {
		if h.name == topic {
			return h.usage + "\n" + wrap(h.text, "  ", 78), nil
		}
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
