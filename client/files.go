package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"securefastchat/proto"
)

// fileWindow is how many chunks of one file may be in flight at once.
const fileWindow = 8

// FileReceipt reports a sent file.
type FileReceipt struct {
	ID     [proto.MsgIDLen]byte // the file id: the receiver's ReceivedFile.ID and receipts name it
	Name   string
	Size   int64
	Chunks int
}

// SendFile sends the file at path to user in sealed chunks of
// proto.FileChunkData bytes, several in flight at once. Each chunk is a
// message of its own, so other messages on the connection are never held
// up behind a large file. progress, if not nil, is called with the bytes
// acknowledged so far.
func (c *Client) SendFile(ctx context.Context, to, path string, progress func(done, total int64)) (*FileReceipt, error) {
	return c.SendFileAs(ctx, to, path, NewMsgID(), progress)
}

// NewMsgID returns a random message or file id.
func NewMsgID() [proto.MsgIDLen]byte {
	var id [proto.MsgIDLen]byte
	if _, err := rand.Read(id[:]); err != nil {
		panic("client: no randomness: " + err.Error())
	}
	return id
}

// SendFileAs is SendFile with the file id chosen by the caller (an
// application that shows the file before it has gone, and matches its
// receipts, picks the id first).
func (c *Client) SendFileAs(ctx context.Context, to, path string, id [proto.MsgIDLen]byte, progress func(done, total int64)) (*FileReceipt, error) {
	if _, err := c.PeerKeys(ctx, to); err != nil {
		return nil, err
	}
	return c.sendFile(ctx, path, id, progress, func(ctx context.Context, chunk []byte) error {
		_, err := c.sendBody(ctx, to, proto.KindFile, chunk)
		return err
	})
}

// SendGroupFileAs sends a file to every member of a group, in chunks
// sealed with the group's key and signed, like its messages. The id names
// it in receipts.
func (c *Client) SendGroupFileAs(ctx context.Context, group, path string, id [proto.MsgIDLen]byte, progress func(done, total int64)) (*FileReceipt, error) {
	if err := c.groupsHere(c.s.Conn()); err != nil {
		return nil, err
	}

	if _, err := c.groups.group(ctx, group); err != nil {
		return nil, err
	}
	return c.sendFile(ctx, path, id, progress, func(ctx context.Context, chunk []byte) error {
		_, err := c.groups.sendGroup(ctx, group, proto.KindFile, chunk, NewMsgID())
		return err
	})
}

// sendPaced sends one chunk, waiting and sending it again while the
// server refuses it for the sender's message limit (every chunk counts as
// a message): a file larger than the burst goes at the limit's pace
// instead of failing.
func sendPaced(ctx context.Context, chunk []byte, send func(ctx context.Context, chunk []byte) error) error {
	wait := 500 * time.Millisecond
	for {
		err := send(ctx, chunk)
		if !errors.Is(err, proto.CodeRateLimited) {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// sendFile cuts the file at path into chunks and sends each with send,
// several in flight at once.
func (c *Client) sendFile(ctx context.Context, path string, id [proto.MsgIDLen]byte, progress func(done, total int64), send func(ctx context.Context, chunk []byte) error) (*FileReceipt, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("client: %s is not a regular file", path)
	}
	size := st.Size()
	if size > c.cfg.MaxFileSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrFileTooLarge, path, size, c.cfg.MaxFileSize)
	}
	name := safeFileName(filepath.Base(path))
	if name == "" {
		return nil, fmt.Errorf("client: %s has no usable file name", path)
	}
	count := int((size + proto.FileChunkData - 1) / proto.FileChunkData)
	if count == 0 {
		count = 1
	}
	fileID := id[:]
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		done     int64
		wg       sync.WaitGroup
		sem      = make(chan struct{}, fileWindow)
	)
	for i := 0; i < count; i++ {
		data := make([]byte, min(int64(proto.FileChunkData), size-int64(i)*proto.FileChunkData))
		if _, err := io.ReadFull(f, data); err != nil {
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("client: reading %s: %w", path, err)
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		ch := proto.FileChunk{FileID: fileID, Name: []byte(name), Size: uint64(size), Index: uint32(i), Count: uint32(count), Data: data}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := sendPaced(ctx, ch.Append(nil), send)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				cancel()
				return
			}
			done += int64(len(ch.Data))
			if progress != nil {
				progress(done, size)
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return &FileReceipt{ID: id, Name: name, Size: size, Chunks: count}, nil
}
