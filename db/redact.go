package db

import "net/url"

// Redact hides the password of a connection URI for logs and errors: in
// the user part (postgres://u:pw@host) and in the query
// (?password=pw, which libpq and pgx accept too).
func Redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return "<unparsable connection string>"
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
