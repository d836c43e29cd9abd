// Package deploy holds what runs tpcd elsewhere (a Dockerfile, a
// Kubernetes example) and the test that keeps it true to the binary.
package deploy
