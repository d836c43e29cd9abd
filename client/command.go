package client

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/tpcd/tpcd/engine"
)

// Kind names a command of the client language.
type Kind uint8

// The commands. Their syntax is in the help text and docs/CLIENT.md.
const (
	CmdBegin Kind = 1 + iota
	CmdExec
	CmdExecute
	CmdCommit
	CmdRollback
	CmdStatus
	CmdNodes
	CmdLoad
	CmdHelp
	CmdQuit
)

var kindNames = [...]string{"", "begin", "exec", "execute", "commit", "rollback", "status", "nodes", "load", "help", "quit"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && k != 0 {
		return kindNames[k]
	}
	return "command(?)"
}

// Command is one parsed command.
type Command struct {
	Kind Kind
	// Node and SQL are set for exec and execute.
	Node engine.NodeID
	SQL  string
	// TxID is the transaction status asks about; 0 means the session's.
	TxID engine.TxID
	// Load is set for load.
	Load *LoadOptions
	// Topic is the command help asks about, if any.
	Topic string
}

// commandWords are the words that start a command, for help and completion.
var commandWords = []string{"begin", "exec", "execute", "commit", "rollback", "status", "nodes", "load", "help", "quit", "exit"}

// ParseCommand parses one command as cut by a Splitter.
func ParseCommand(text string) (Command, error) {
	text = strings.TrimSpace(text)
	word, rest := cutWord(text)
	lower := strings.ToLower(word)
	if strings.HasPrefix(lower, "@") {
		node, err := parseNode(word)
		if err != nil {
			return Command{}, err
		}
		return sqlCommand(CmdExec, node, rest, word)
	}
	switch lower {
	case "exec", "execute":
		kind := CmdExec
		if lower == "execute" {
			kind = CmdExecute
		}
		target, sql := cutWord(rest)
		if !strings.HasPrefix(target, "@") {
			return Command{}, fmt.Errorf("%s needs a node: %s @0 SQL", lower, lower)
		}
		node, err := parseNode(target)
		if err != nil {
			return Command{}, err
		}
		return sqlCommand(kind, node, sql, lower)
	case "load":
		opts, err := ParseLoadArgs(splitArgs(rest))
		if err != nil {
			return Command{}, err
		}
		return Command{Kind: CmdLoad, Load: &opts}, nil
	}

	args := strings.Fields(dropComment(rest))
	noArgs := func(k Kind) (Command, error) {
		if len(args) > 0 {
			return Command{}, fmt.Errorf("%s takes no arguments (got %q)", lower, strings.Join(args, " "))
		}
		return Command{Kind: k}, nil
	}
	switch lower {
	case "begin":
		return noArgs(CmdBegin)
	case "commit":
		return noArgs(CmdCommit)
	case "rollback", "abort":
		return noArgs(CmdRollback)
	case "nodes":
		return noArgs(CmdNodes)
	case "quit", "exit", `\q`:
		return noArgs(CmdQuit)
	case "help", `\?`, "?":
		if len(args) > 1 {
			return Command{}, errors.New("help takes at most one command name")
		}
		c := Command{Kind: CmdHelp}
		if len(args) == 1 {
			c.Topic = strings.ToLower(args[0])
		}
		return c, nil
	case "status":
		c := Command{Kind: CmdStatus}
		switch len(args) {
		case 0:
		case 1:
			n, err := strconv.ParseUint(strings.TrimPrefix(args[0], "#"), 10, 64)
			if err != nil || n == 0 {
				return Command{}, fmt.Errorf("status %s: want a transaction id, a positive number", args[0])
			}
			c.TxID = engine.TxID(n)
		default:
			return Command{}, errors.New("status takes at most one transaction id")
		}
		return c, nil
	}
	if lower == "" {
		return Command{}, errors.New("empty command")
	}
	if isSQLWord(lower) {
		return Command{}, fmt.Errorf("%q: statements need a node, e.g. @0 %s (in a transaction) or execute @0 %s", word, text, text)
	}
	return Command{}, fmt.Errorf("unknown command %q; type help for the list", word)
}

func sqlCommand(kind Kind, node engine.NodeID, sql, what string) (Command, error) {
	sql = strings.TrimSpace(sql)
	if stripComments(sql) == "" {
		return Command{}, fmt.Errorf("%s: the SQL statement is missing", what)
	}
	return Command{Kind: kind, Node: node, SQL: sql}, nil
}

// parseNode reads @0 or @p0.
func parseNode(word string) (engine.NodeID, error) {
	s := strings.TrimPrefix(word, "@")
	s = strings.TrimPrefix(strings.ToLower(s), "p")
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a node: write @0 for participant 0, @1 for participant 1, ...", word)
	}
	return engine.NodeID(n), nil
}

// cutWord splits off the first whitespace-separated word.
func cutWord(s string) (word, rest string) {
	s = strings.TrimLeft(s, " \t\r\n")
	i := strings.IndexAny(s, " \t\r\n")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeft(s[i:], " \t\r\n")
}

func dropComment(s string) string {
	if i := strings.Index(s, "--"); i >= 0 {
		return s[:i]
	}
	return s
}

var sqlWords = map[string]bool{
	"select": true, "insert": true, "update": true, "delete": true, "create": true, "drop": true,
	"alter": true, "with": true, "truncate": true, "values": true, "table": true, "copy": true,
}

func isSQLWord(w string) bool { return sqlWords[w] }

// splitArgs splits a command line into words the way a shell would for
// simple cases: whitespace separates, single or double quotes group.
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	var quote rune
	inWord := false
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

// LoadOptions describe a CSV load.
type LoadOptions struct {
	// File is the CSV file; its first line names the columns.
	File string
	// Table receives the rows.
	Table string
	// Key is the column whose value picks the participant.
	Key string
	// Create makes the table on every participant first (CREATE TABLE IF
	// NOT EXISTS), with column types guessed from the data.
	Create bool
	// Atomic loads every row (and with Create the table) in one
	// distributed transaction: all of them or none. TxSize does not apply.
	Atomic bool
	// Append allows loading into a table that already holds rows; without
	// it such a table is refused, so that a second run does not double
	// every row.
	Append bool
	// TxSize is the number of rows per distributed transaction.
	TxSize int
}

// DefaultTxSize is the rows per transaction of a load unless told.
const DefaultTxSize = 100

// ParseLoadArgs reads the arguments of the load command:
// --table NAME --key COLUMN [--create] [--atomic] [--append] [--tx-size N] FILE.
func ParseLoadArgs(args []string) (LoadOptions, error) {
	var o LoadOptions
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.Table, "table", "", "table to load into")
	fs.StringVar(&o.Key, "key", "", "column whose hash picks the node")
	fs.BoolVar(&o.Create, "create", false, "create the table on every participant")
	fs.BoolVar(&o.Atomic, "atomic", false, "load every row in one transaction")
	fs.BoolVar(&o.Append, "append", false, "load into a table that already holds rows")
	fs.IntVar(&o.TxSize, "tx-size", DefaultTxSize, "rows per transaction")
	// Flags may follow the file name too: parse, take a positional, go on.
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			return o, fmt.Errorf("load: %v (usage: %s)", err, loadUsage)
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(files) != 1 {
		return o, fmt.Errorf("load needs exactly one CSV file (usage: %s)", loadUsage)
	}
	o.File = files[0]
	return o, o.Check()
}

const loadUsage = "load --table NAME --key COLUMN [--create] [--atomic] [--append] [--tx-size N] FILE.csv"

// Check validates the options.
func (o LoadOptions) Check() error {
	switch {
	case o.File == "":
		return fmt.Errorf("load: the CSV file is missing (usage: %s)", loadUsage)
	case o.Table == "":
		return fmt.Errorf("load: --table is required (usage: %s)", loadUsage)
	case o.Key == "":
		return fmt.Errorf("load: --key is required: the column whose hash picks the node (usage: %s)", loadUsage)
	case o.TxSize < 1:
		return fmt.Errorf("load: --tx-size %d: must be at least 1", o.TxSize)
	}
	return nil
}
