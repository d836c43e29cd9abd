package client

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/tpcd/tpcd/internal/testbin"
)

// testShellDisplay drives what psql users reach for in the shell, on a
// real pseudo-terminal against a real cluster: numbers right-aligned,
// \timing, \x, a pager for output taller than the terminal, Tab completion
// of SQL keywords and of the table names each participant has, and a
// guess at a mistyped command.
func testShellDisplay(t *testing.T, c *testCluster) {
	c.createTable(t, "CREATE TABLE shelf (k int PRIMARY KEY, v text, price numeric, code text)")
	if _, err := c.Data[0].Exec(t.Context(), "INSERT INTO shelf VALUES (1, 'one', 2.5, '0042'), (1000, 'many', 10, '7')"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Data[1].Exec(t.Context(), "CREATE TABLE only_at_one (n int)"); err != nil {
		t.Fatal(err)
	}
	// The pager marks each line it shows, so the screen tells paged output
	// from the rest.
	env := []string{"TERM=xterm", "HOME=" + t.TempDir(), "PAGER=sed 's/^/paged: /'"}
	tm := startTerminal(t, env, "client", "--coordinator", c.CoordAddr, "--no-history")
	tm.waitPrompt("tpcd>")

	// Numbers right-aligned, text left-aligned, as psql has them (the
	// headers stay left-aligned): by the column's type, so digits in a
	// text column stay left.
	tm.send("execute @0 select k, v, price, code from shelf order by k;\r")
	tm.waitFor("the aligned table", func(all, _ string) bool {
		return strings.Contains(all, "\n k    | v    | price | code\n------+------+-------+------\n"+
			"    1 | one  |   2.5 | 0042\n 1000 | many |    10 | 7\n(2 rows)\n")
	})
	tm.waitPrompt("tpcd>")

	// \timing: a time after each outcome, until it is turned off.
	tm.send("\\timing\r")
	tm.waitCount("\nTiming is on.\n", 1)
	tm.send("nodes\r")
	tm.waitFor("the time", func(all, _ string) bool {
		return regexp.MustCompile(`\nTiming is on\.\n(?s:.*)\nTime: \d+\.\d{3} ms\n`).MatchString(all)
	})
	tm.send("\\timing off\r")
	tm.waitCount("\nTiming is off.\n", 1)

	// \x: each row as a block.
	tm.send("\\x\r")
	tm.waitCount("\nExpanded display is on.\n", 1)
	tm.send("execute @0 select k, v from shelf where k = 1000;\r")
	tm.waitFor("the expanded row", func(all, _ string) bool {
		return strings.Contains(all, "\n-[ RECORD 1 ]\nk | 1000\nv | many\n")
	})
	tm.send("\\x off\r")
	tm.waitCount("\nExpanded display is off.\n", 1)

	// Output taller than the terminal (40 rows) goes through $PAGER;
	// shorter output did not (the table above shows no mark).
	tm.send("execute @0 select generate_series(1, 60) as n;\r")
	tm.waitCount("\npaged: (60 rows)\n", 1)
	tm.waitPrompt("tpcd>")
	if all := tm.waitCount("\npaged: ", 1); strings.Contains(all, "paged:     1 | one") || strings.Count(all, "paged: ") != 64 {
		t.Fatalf("want the 64 lines of the tall table and its note paged, and only them:\n%s", all)
	}
	tm.send("\\pset pager off\r")
	tm.waitCount("\nPager usage is off.\n", 1)
	tm.send("execute @0 select generate_series(1, 60) as n;\r")
	tm.waitFor("the unpaged table", func(all, _ string) bool { return strings.Contains(all, "\n(60 rows)\n") })
	tm.waitPrompt("tpcd>")

	// Tab completes SQL keywords in the case they were begun in, and
	// after FROM the tables of the statement's participant, which it asks
	// for.
	tm.send("execute @1 sel\t")
	tm.waitPrompt("tpcd> execute @1 select")
	tm.send("* FR\t")
	tm.waitPrompt("tpcd> execute @1 select * FROM")
	tm.send("only\t")
	tm.waitPrompt("tpcd> execute @1 select * FROM only_at_one")
	tm.send(";\r")
	tm.waitCount("\n(0 rows)\n", 1)
	tm.waitPrompt("tpcd>")
	// @0 has no such table: nothing to complete.
	tm.send("execute @0 select * from only\t")
	tm.send("_x")
	tm.waitPrompt("tpcd> execute @0 select * from only_x")
	tm.send("\x03")
	tm.waitPrompt("tpcd>")
	// A table made in the session is offered at once.
	tm.send("execute @0 create table made_here (x int);\r")
	tm.waitFor("CREATE TABLE", func(all, _ string) bool { return strings.Contains(all, "\nCREATE TABLE (batch transaction") })
	tm.waitPrompt("tpcd>")
	tm.send("begin\r")
	tm.waitFor("BEGIN", func(all, _ string) bool { return regexp.MustCompile(`\nBEGIN \d+\n`).MatchString(all) })
	tm.send("@0 insert into ma\t")
	tm.waitFor("the completed table", func(_, cur string) bool { return strings.HasSuffix(cur, "> @0 insert into made_here") })
	tm.send("values (7);\r")
	tm.waitCount("\nINSERT 0 1\n", 1)
	tm.send("rollback\r")
	tm.waitFor("ROLLBACK", func(all, _ string) bool { return regexp.MustCompile(`\nROLLBACK \d+\n`).MatchString(all) })
	tm.waitPrompt("tpcd>")

	// A mistyped command or backslash command gets a guess.
	tm.send("comit\r")
	tm.waitCount(`error: unknown command "comit"; did you mean commit? (type help for the list)`, 1)
	tm.send("\\timming\r")
	tm.waitCount(`error: unknown command "\\timming"; did you mean \timing? (type help for the list)`, 1)
	tm.waitPrompt("tpcd>")
	tm.send("\\q\r")
	if code := tm.exit(); code != 0 {
		t.Fatalf("exit status %d after \\q", code)
	}

	// Output that is not a terminal is never paged, however long.
	out, errs, code := testbin.Run(t, tpcdBinary(t), append(cleanEnv(), "PAGER=sed 's/^/paged: /'"), "",
		"client", "--coordinator", c.CoordAddr, "-c", "execute @0 select generate_series(1, 60) as n")
	if code != 0 || strings.Contains(out, "paged") || !strings.Contains(out, "\n 60\n(60 rows)\n") {
		t.Fatalf("not a terminal: status %d, stdout %q, stderr %q", code, out, errs)
	}
}

// testSeedDialogue types statements as the seed's client takes them: a
// bare SQL line, the node asked for, and whether to send another.
func testSeedDialogue(t *testing.T, c *testCluster) {
	c.createTable(t, "CREATE TABLE seedkv (k int PRIMARY KEY, v text)")
	home := t.TempDir()
	hist := home + "/hist"
	tm := startTerminal(t, []string{"TERM=xterm", "HOME=" + home}, "client", "--coordinator", c.CoordAddr, "--history", hist)
	tm.waitPrompt("tpcd>")

	// Tab offers SQL keywords at the start of the line too.
	tm.send("ins\t")
	tm.waitPrompt("tpcd> insert")
	tm.send("into seedkv values (1, 'one')\r")
	tm.waitPrompt("On this node #:")
	// A node the cluster lacks is refused and asked again.
	tm.send("9\r")
	tm.waitCount("error: there is no node 9: the participants are @0..@2", 1)
	tm.waitPrompt("On this node #:")
	tm.send("1\r")
	tm.waitFor("the insert", func(all, _ string) bool {
		return regexp.MustCompile(`\nINSERT 0 1 \(batch transaction \d+ committed\)\n`).MatchString(all)
	})
	tm.waitPrompt("Send another query request? (y/n)")
	tm.send("y\r")
	tm.waitPrompt("tpcd>")
	if n := c.count(t, 1, "SELECT count(*) FROM seedkv WHERE v = 'one'"); n != 1 {
		t.Fatalf("participant 1 holds %d rows of the insert, want 1", n)
	}

	// In an open transaction the statement joins it.
	tm.send("begin\r")
	screen := tm.waitFor("BEGIN", func(all, _ string) bool { return regexp.MustCompile(`\nBEGIN \d+\n`).MatchString(all) })
	tx := regexp.MustCompile(`\nBEGIN (\d+)\n`).FindStringSubmatch(screen)[1]
	tm.send("insert into seedkv values (2, 'two')\r")
	tm.waitPrompt("On this node #:")
	tm.send("@2\r")
	tm.waitCount("\nINSERT 0 1\n", 1)
	tm.waitPrompt("Send another query request? (y/n)")
	tm.send("\r")
	tm.waitPrompt("tpcd tx " + tx + ">")
	tm.send("rollback\r")
	tm.waitCount("\nROLLBACK "+tx+"\n", 1)
	if n := c.count(t, 2, "SELECT count(*) FROM seedkv"); n != 0 {
		t.Fatalf("the rolled-back insert landed: %d rows", n)
	}

	// Ctrl-C at the node question drops the statement.
	tm.send("select 1\r")
	tm.waitPrompt("On this node #:")
	tm.send("\x03")
	tm.waitPrompt("tpcd>")

	// n ends the client, as it ends the seed's.
	tm.send("select v from seedkv\r")
	tm.waitPrompt("On this node #:")
	tm.send("1\r")
	tm.waitFor("the row", func(all, _ string) bool { return strings.Contains(all, "\n v\n-----\n one\n(1 row)\n") })
	tm.waitPrompt("Send another query request? (y/n)")
	tm.send("n\r")
	if code := tm.exit(); code != 0 {
		t.Fatalf("exit status %d after n", code)
	}
	// The history holds what runs without the questions.
	data, err := os.ReadFile(hist)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "execute @1 insert into seedkv values (1, 'one');\n") ||
		!strings.Contains(string(data), "exec @2 insert into seedkv values (2, 'two');\n") {
		t.Fatalf("history:\n%s", data)
	}

	// A script has nobody to ask: it refuses the statement as before.
	_, errs, code := testbin.Run(t, tpcdBinary(t), cleanEnv(), "", "client", "--coordinator", c.CoordAddr, "-c", "select 1")
	if code != ExitStopped || !strings.Contains(errs, `"select": statements need a node, e.g. @0 select 1 (in a transaction) or execute @0 select 1`) {
		t.Fatalf("script: status %d, stderr %q", code, errs)
	}
}
