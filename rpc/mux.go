package rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"sync"
)

// MuxProtocol is the Upgrade token of a multiplexed batch stream: one
// connection that many callers share, each with calls in flight at once.
// Its frames are those of StreamProtocol, and a frame's body is a run of
// messages, each a request body (or its reply body) with a tag that pairs
// the two. The server runs every message on its own as soon as its frame
// is read and sends the replies that are ready as one frame, in the order
// they end; the client sends whatever its callers have queued as one
// frame. So calls that happen together share their frames' system calls
// at both ends, and one call that waits (on a lock, say) holds up nobody
// else's reply, as it would in a JSON-RPC batch (docs/WIRE.md).
const MuxProtocol = "tpcd-batch/3"

// muxHeader is a message's header: its tag and a word holding its body's
// length, both big endian. A request's tag is the client's choice and is
// never 0; the reply to it carries the same tag.
const muxHeader = 8

// muxCancel, set in a message's length word, makes the message a request
// to cancel the call of that tag: the server cancels its context and still
// answers it. Such a message has no body.
const muxCancel = 1 << 31

// muxCoalesce bounds the frame a writer fills with queued messages: a
// larger message goes in a frame of its own, so the frames that share
// their system calls stay well inside either end's limit.
const muxCoalesce = 1 << 20

// muxMsg is one message of a multiplexed frame.
type muxMsg struct {
	tag    uint32
	cancel bool
	body   []byte
}

// appendMuxFrame appends a frame holding msgs to buf: the frame header,
// then each message's header and body.
func appendMuxFrame(buf []byte, msgs []muxMsg) ([]byte, error) {
	size := 0
	for _, m := range msgs {
		size += muxHeader + len(m.body)
	}
	if uint64(size) >= oneWayFrame {
		return nil, fmt.Errorf("frame of %d bytes exceeds the format's 2 GiB", size)
	}
	start := len(buf)
	buf = append(buf, make([]byte, frameHeader)...)
	for _, m := range msgs {
		word := uint32(len(m.body))
		if m.cancel {
			word |= muxCancel
		}
		buf = binary.BigEndian.AppendUint32(buf, m.tag)
		buf = binary.BigEndian.AppendUint32(buf, word)
		buf = append(buf, m.body...)
	}
	body := buf[start+frameHeader:]
	binary.BigEndian.PutUint32(buf[start:], uint32(size))
	binary.BigEndian.PutUint32(buf[start+4:], crc32.Checksum(body, castagnoli))
	return buf, nil
}

// splitMux cuts a frame's body into its messages, which share its memory.
func splitMux(body []byte) ([]muxMsg, error) {
	var msgs []muxMsg
	for len(body) > 0 {
		if len(body) < muxHeader {
			return nil, errors.New("multiplexed frame ends inside a message header")
		}
		tag, word := binary.BigEndian.Uint32(body), binary.BigEndian.Uint32(body[4:])
		size := word &^ muxCancel
		cancel := word&muxCancel != 0
		body = body[muxHeader:]
		if uint64(size) > uint64(len(body)) {
			return nil, fmt.Errorf("multiplexed message of %d bytes runs past its frame's end", size)
		}
		if tag == 0 || cancel && size != 0 {
			return nil, fmt.Errorf("malformed multiplexed message header (tag %d, word %#x)", tag, word)
		}
		msgs = append(msgs, muxMsg{tag: tag, cancel: cancel, body: body[:size:size]})
		body = body[size:]
	}
	if len(msgs) == 0 {
		return nil, errors.New("empty multiplexed frame")
	}
	return msgs, nil
}

// errMuxTooLarge reports a frame over the reader's limit that holds one
// message alone, whose header it read and whose body it skipped: the
// message, and only it, can be answered as too large.
type errMuxTooLarge struct {
	tag  uint32
	size int64
}

func (e errMuxTooLarge) Error() string {
	return fmt.Sprintf("multiplexed message of %d bytes", e.size)
}

// readMuxFrame reads one multiplexed frame for a reader that takes
// messages of at most limit bytes; the caller answers a message over
// limit that came with others as too large. A frame larger than a writer may
// fill with queued messages, and than one message of limit bytes, holding
// one message alone is skipped, with errMuxTooLarge naming the message;
// any other frame that large is an error the stream does not survive, as
// nothing in it can be answered.
func readMuxFrame(r io.Reader, limit int64) ([]muxMsg, error) {
	size, sum, err := readFrameHeader(r)
	if err != nil {
		return nil, err
	}
	return readMuxBody(r, size, sum, limit)
}

// readMuxBody is readMuxFrame once the frame's header is read.
func readMuxBody(r io.Reader, size, sum uint32, limit int64) ([]muxMsg, error) {
	if int64(size) > muxHeader+max(limit, muxCoalesce) {
		var hdr [muxHeader]byte
		if size < muxHeader {
			return nil, fmt.Errorf("frame of %d bytes", size)
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, err
		}
		tag, word := binary.BigEndian.Uint32(hdr[:]), binary.BigEndian.Uint32(hdr[4:])
		if tag == 0 || word&muxCancel != 0 || int64(word)+muxHeader != int64(size) {
			return nil, fmt.Errorf("frame of %d bytes over the limit of %d holds more than one message", size, limit)
		}
		if _, err := io.CopyN(io.Discard, r, int64(word)); err != nil {
			return nil, err
		}
		return nil, errMuxTooLarge{tag: tag, size: int64(word)}
	}
	body, err := readFrameBody(r, size, sum)
	if err != nil {
		return nil, err
	}
	return splitMux(body)
}

// muxWriter writes a stream's messages from a goroutine of its own, which
// a message queued while it sleeps wakes. Before it takes the queue it
// lets every other runnable goroutine run once, so that messages queued
// at nearly the same moment, by calls ending or starting together, go out
// in one frame and share its system calls.
type muxWriter struct {
	// write sends one frame; written is told how many messages each frame
	// carried, or would have carried when it failed (then err is set).
	write   func(frame []byte) error
	written func(n int, err error)

	mu      sync.Mutex
	queue   []muxMsg
	waiting bool // the goroutine sleeps: the next message wakes it
	failed  bool
	wake    chan struct{}
	buf     []byte
}

func newMuxWriter(write func([]byte) error, written func(int, error)) *muxWriter {
	return &muxWriter{write: write, written: written, wake: make(chan struct{}, 1)}
}

// send queues msg; false means the stream can take no more.
func (w *muxWriter) send(msg muxMsg) bool {
	w.mu.Lock()
	if w.failed {
		w.mu.Unlock()
		return false
	}
	w.queue = append(w.queue, msg)
	wake := w.waiting
	w.waiting = false
	w.mu.Unlock()
	if wake {
		w.wake <- struct{}{}
	}
	return true
}

// run writes frames until done is closed or a write fails.
func (w *muxWriter) run(done <-chan struct{}) {
	for {
		w.mu.Lock()
		if len(w.queue) == 0 {
			w.waiting = true
			w.mu.Unlock()
			select {
			case <-w.wake:
			case <-done:
				return
			}
			runtime.Gosched()
			continue
		}
		batch := takeMux(&w.queue)
		w.mu.Unlock()
		buf, err := appendMuxFrame(w.buf[:0], batch)
		if err == nil {
			err = w.write(buf)
		}
		if cap(buf) <= muxCoalesce {
			w.buf = buf
		}
		if err != nil {
			w.mu.Lock()
			w.failed = true
			n := len(batch) + len(w.queue)
			w.queue = nil
			w.mu.Unlock()
			w.written(n, err)
			return
		}
		w.written(len(batch), nil)
	}
}
