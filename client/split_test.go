package client

import (
	"reflect"
	"strings"
	"testing"
)

func TestSplitter(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  []string // commands, in order; a trailing "|pending" marks an unfinished one
	}{
		{"plain commands end at the line", []string{"begin", "commit"}, []string{"begin", "commit"}},
		{"several on a line", []string{"begin; @0 select 1; commit"}, []string{"begin", "@0 select 1", "commit"}},
		{"sql continues to the semicolon", []string{"@0 insert into t", "values (1);", "commit"},
			[]string{"@0 insert into t\nvalues (1)", "commit"}},
		{"semicolon in a string", []string{"@1 insert into t values ('a;b');"}, []string{"@1 insert into t values ('a;b')"}},
		{"doubled quote", []string{"@1 select 'it''s; fine';"}, []string{"@1 select 'it''s; fine'"}},
		{"string across lines", []string{"@0 select 'a", "b;c';"}, []string{"@0 select 'a\nb;c'"}},
		{"dollar quote", []string{"@0 do $x$ begin; end $x$;"}, []string{"@0 do $x$ begin; end $x$"}},
		{"parameter is no dollar quote", []string{"@0 select $1;"}, []string{"@0 select $1"}},
		{"escape string", []string{`@0 select E'a\'; b';`}, []string{`@0 select E'a\'; b'`}},
		{"quoted identifier", []string{`@0 select 1 as "x;y";`}, []string{`@0 select 1 as "x;y"`}},
		{"line comment hides semicolon", []string{"@0 select 1 -- no; end", ";"}, []string{"@0 select 1 -- no; end\n"}},
		{"block comment", []string{"@0 select /* ; */ 1;"}, []string{"@0 select /* ; */ 1"}},
		{"comment lines are skipped", []string{"-- a comment", "", "nodes"}, []string{"nodes"}},
		{"unfinished sql", []string{"exec @0 select 1"}, []string{"exec @0 select 1|pending"}},
		{"empty statements", []string{";;", "begin;"}, []string{"begin"}},
		{"status with id", []string{"status 7"}, []string{"status 7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Splitter
			var got []string
			for _, l := range tt.lines {
				for _, c := range s.Feed(l) {
					got = append(got, c.Text)
				}
			}
			if s.Pending() {
				c, ok := s.Flush()
				if !ok {
					t.Fatal("pending but Flush returned nothing")
				}
				got = append(got, c.Text+"|pending")
			}
			want := tt.want
			for i := range want {
				want[i] = strings.TrimRight(want[i], "\n")
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}

func TestSplitterHistoryAndReset(t *testing.T) {
	var s Splitter
	if got := s.Feed("exec @1 insert into kv"); len(got) != 0 {
		t.Fatalf("completed too early: %q", got)
	}
	if !s.Pending() {
		t.Fatal("not pending after an unfinished statement")
	}
	got := s.Feed("  values (2, 'b');")
	if len(got) != 1 || got[0].History != "exec @1 insert into kv values (2, 'b');" {
		t.Fatalf("history entry: %+v", got)
	}
	s.Feed("@0 select 'open")
	s.Reset()
	if s.Pending() {
		t.Fatal("pending after Reset")
	}
	if got := s.Feed("commit"); len(got) != 1 || got[0].Text != "commit" {
		t.Fatalf("after Reset: %+v", got)
	}
}
