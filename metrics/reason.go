package metrics

import (
	"regexp"
	"strings"
)

// Reason classes of aborts, the values of the "reason" label.
const (
	ReasonRollback           = "rollback"
	ReasonVoteNo             = "vote_no"
	ReasonVoteTimeout        = "vote_timeout"
	ReasonUnreachable        = "unreachable"
	ReasonExecTimeout        = "exec_timeout"
	ReasonStatementFailed    = "statement_failed"
	ReasonClientIdle         = "client_idle"
	ReasonCoordinatorRestart = "coordinator_restart"
	ReasonOther              = "other"
)

// statementFailure is how the engine words a failed statement: the
// participant, then PostgreSQL's error.
var statementFailure = regexp.MustCompile(`^p[0-9]+: `)

// reasonTexts are tried in order: the first text the reason contains
// names its class.
var reasonTexts = []struct{ text, class string }{
	{"rolled back by client", ReasonRollback},
	{"voted no", ReasonVoteNo},
	{"vote timeout", ReasonVoteTimeout},
	{"did not answer statement", ReasonExecTimeout},
	{"unreachable", ReasonUnreachable},
	{"client idle", ReasonClientIdle},
	{"coordinator restarted", ReasonCoordinatorRestart},
}

// ReasonClass sorts an abort reason, free text from the engine, into a few
// classes, so that the label's values stay few whatever the errors say.
func ReasonClass(reason string) string {
	for _, r := range reasonTexts {
		if strings.Contains(reason, r.text) {
			return r.class
		}
	}
	if statementFailure.MatchString(reason) {
		return ReasonStatementFailed
	}
	return ReasonOther
}
