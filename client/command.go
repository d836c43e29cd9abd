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
	// CmdSet changes how the client shows results: \timing, \x, \pset.
	CmdSet
	CmdInDoubt
	CmdResolve
	// CmdPlain runs one statement as a plain transaction at its
	// participant (api.MethodPlainTransact).
	CmdPlain
)

var kindNames = [...]string{"", "begin", "exec", "execute", "commit", "rollback", "status", "nodes", "load", "help", "quit", "set", "indoubt", "resolve", "plain"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && k != 0 {
		return kindNames[k]
	}
	return "command(?)"
}

// Command is one parsed command.
type Command struct {
	Kind Kind
	// Node and SQL are set for exec, execute and plain.
	Node engine.NodeID
	SQL  string
	// TxID is the transaction status asks about; 0 means the session's.
	TxID engine.TxID
	// Key is the idempotency key begin gives its transaction, or the key
	// status asks about.
	Key string
	// Load is set for load.
	Load *LoadOptions
	// Topic is the command help asks about, if any.
	Topic string
	// Setting and Value are set for CmdSet: timing, expanded or pager,
	// and the value asked for ("" to toggle).
	Setting, Value string
}

// commandWords are the words that start a command, for help, completion
// and guesses at a mistyped one.
var commandWords = []string{"begin", "exec", "execute", "plain", "commit", "rollback", "status", "nodes", "indoubt", "resolve", "load", "help", "quit", "exit",
	`\timing`, `\x`, `\pset`, `\q`, `\?`}

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
	case "exec", "execute", "plain":
		kind := map[string]Kind{"exec": CmdExec, "execute": CmdExecute, "plain": CmdPlain}[lower]
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
		switch len(args) {
		case 0:
			return Command{Kind: CmdBegin}, nil
		case 1:
			return Command{Kind: CmdBegin, Key: args[0]}, nil
		}
		return Command{}, errors.New("begin takes at most one argument, the transaction's idempotency key")
	case "commit":
		return noArgs(CmdCommit)
	case "rollback", "abort":
		return noArgs(CmdRollback)
	case "nodes":
		return noArgs(CmdNodes)
	case "indoubt":
		return noArgs(CmdInDoubt)
	case "resolve":
		if len(args) != 1 {
			return Command{}, errors.New("resolve takes one transaction id (indoubt lists them)")
		}
		n, err := strconv.ParseUint(strings.TrimPrefix(args[0], "#"), 10, 64)
		if err != nil || n == 0 {
			return Command{}, fmt.Errorf("resolve %s: want a transaction id, a positive number", args[0])
		}
		return Command{Kind: CmdResolve, TxID: engine.TxID(n)}, nil
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
	case `\timing`, `\x`, `\pset`:
		return parseSetting(lower, args)
	case "status":
		c := Command{Kind: CmdStatus}
		switch {
		case len(args) == 0:
		case len(args) == 2 && strings.EqualFold(args[0], "key"):
			c.Key = args[1]
		case len(args) == 1:
			n, err := strconv.ParseUint(strings.TrimPrefix(args[0], "#"), 10, 64)
			if err != nil || n == 0 {
				return Command{}, fmt.Errorf("status %s: want a transaction id, a positive number (or status key KEY)", args[0])
			}
			c.TxID = engine.TxID(n)
		default:
			return Command{}, errors.New("status takes a transaction id, or key and a key")
		}
		return c, nil
	}
	if lower == "" {
		return Command{}, errors.New("empty command")
	}
	if isSQLWord(lower) {
		return Command{}, &NodeMissingError{Word: word, SQL: text}
	}
	if guess, ok := closest(lower, commandWords); ok {
		return Command{}, fmt.Errorf("unknown command %q; did you mean %s? (type help for the list)", word, guess)
	}
	return Command{}, fmt.Errorf("unknown command %q; type help for the list", word)
}

// settingValues are the values each setting takes; "" toggles the first
// two.
var settingValues = map[string][]string{
	"timing":   {"on", "off"},
	"expanded": {ExpandedOn, "off", ExpandedAuto},
	"pager":    {PagerOn, PagerOff, PagerAlways},
}

// parseSetting reads \timing [on|off], \x [on|off|auto] and
// \pset pager|expanded [VALUE].
func parseSetting(cmd string, args []string) (Command, error) {
	c := Command{Kind: CmdSet}
	switch cmd {
	case `\timing`:
		c.Setting = "timing"
	case `\x`:
		c.Setting = "expanded"
	default:
		if len(args) == 0 {
			return Command{}, errors.New(`\pset needs an option: \pset pager [on|off|always] or \pset expanded [on|off|auto]`)
		}
		opt := strings.ToLower(args[0])
		args = args[1:]
		switch opt {
		case "pager", "expanded":
			c.Setting = opt
		case "x":
			c.Setting = "expanded"
		default:
			if guess, ok := closest(opt, []string{"pager", "expanded"}); ok {
				return Command{}, fmt.Errorf(`\pset %s: no such option; did you mean %s?`, opt, guess)
			}
			return Command{}, fmt.Errorf(`\pset %s: no such option; tpcd knows pager and expanded`, opt)
		}
	}
	values := settingValues[c.Setting]
	switch len(args) {
	case 0:
		return c, nil
	case 1:
	default:
		return Command{}, fmt.Errorf("%s takes one value: %s", cmd, strings.Join(values, ", "))
	}
	v := strings.ToLower(args[0])
	switch v {
	case "true", "1", "yes":
		v = "on"
	case "false", "0", "no":
		v = "off"
	}
	for _, ok := range values {
		if v == ok {
			c.Value = v
			return c, nil
		}
	}
	return Command{}, fmt.Errorf("%s %s: want %s", cmd, args[0], strings.Join(values, ", "))
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

// NodeMissingError is a statement typed without a node. A script cannot
// run it; the interactive shell asks which node, as the seed's client does.
type NodeMissingError struct {
	// Word is the statement's first word as typed.
	Word string
	// SQL is the statement.
	SQL string
}

func (e *NodeMissingError) Error() string {
	return fmt.Sprintf("%q: statements need a node, e.g. @0 %s (in a transaction) or execute @0 %s", e.Word, e.SQL, e.SQL)
}

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
	// Source names the rows in messages and the summary instead of File,
	// when File is a temporary copy (the demo loader's dump of a table).
	Source string
	// Nodes, if not 0, splits the rows over participants 0..Nodes-1 only
	// (the seed client's --n-nodes); more than the coordinator has is
	// refused.
	Nodes int
	// Types are column types to use instead of guessing them from the
	// data, by column name: the demo loader knows its source's.
	Types map[string]string
	// Direct sends the INSERTs straight to the participants
	// (api.MethodDirectExec), at the addresses the coordinator reaches
	// them at, instead of through the coordinator, which then only begins
	// and commits each transaction.
	Direct bool
}

// source is what messages call the rows' origin.
func (o LoadOptions) source() string {
	if o.Source != "" {
		return o.Source
	}
	return o.File
}

// DefaultTxSize is the rows per transaction of a load unless told.
const DefaultTxSize = 100

// ParseLoadArgs reads the arguments of the load command:
// --table NAME --key COLUMN [--create] [--atomic] [--append] [--direct] [--tx-size N] FILE.
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
	fs.BoolVar(&o.Direct, "direct", false, "send the rows straight to the participants")
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

const loadUsage = "load --table NAME --key COLUMN [--create] [--atomic] [--append] [--direct] [--tx-size N] FILE.csv"

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
	case o.Nodes < 0:
		return fmt.Errorf("load: --n-nodes %d: must be at least 1", o.Nodes)
	}
	return nil
}
