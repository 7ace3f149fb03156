package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"securefastchat/internal/backup"
)

// Client calls a server's admin API.
type Client struct {
	Addr  string // host:port of the admin listener
	Token string // the admin token
	HTTP  *http.Client
}

// ErrUnauthorized: the server refused the token.
var ErrUnauthorized = fmt.Errorf("admin: the server refused the admin token")

// Do sends a request (a JSON body if body is not nil) and returns the
// response, which the caller closes; an error status becomes an error
// with the API's message.
func (a *Client) Do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+a.Addr+path, rd)
	if err != nil {
		return nil, fmt.Errorf("admin: %s: %w", a.Addr, err)
	}
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := a.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the admin listener at %s (is the server running with --admin %s?): %w", a.Addr, a.Addr, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e APIError
		_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		if resp.StatusCode == http.StatusUnauthorized {
			return nil, fmt.Errorf("%w: %s", ErrUnauthorized, e.Error)
		}
		return nil, fmt.Errorf("admin: %s", e.Error)
	}
	return resp, nil
}

// JSON is Do, decoding the response's JSON into out.
func (a *Client) JSON(ctx context.Context, method, path string, body, out any) error {
	resp, err := a.Do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

// Backup takes a backup of the running server into the new file outPath:
// it is written beside it first, synced, and checked whole (laid out in a
// scratch folder as a restore would) before it takes its name. It returns
// its size and what it holds.
func (a *Client) Backup(ctx context.Context, outPath string) (int64, *backup.Manifest, error) {
	if _, err := os.Stat(outPath); err == nil {
		return 0, nil, fmt.Errorf("%s exists; choose a new file", outPath)
	}
	resp, err := a.Do(ctx, "GET", "/v1/backup", nil)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	tmp := outPath + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, nil, err
	}
	defer os.Remove(tmp)
	n, err := io.Copy(f, resp.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, nil, fmt.Errorf("backup: %w", err)
	}
	dir, err := os.MkdirTemp(filepath.Dir(outPath), ".backup-check-")
	if err != nil {
		return 0, nil, err
	}
	defer os.RemoveAll(dir)
	rf, err := os.Open(tmp)
	if err != nil {
		return 0, nil, err
	}
	m, err := backup.Restore(rf, dir, backup.Limits{})
	rf.Close()
	if err != nil {
		return 0, nil, fmt.Errorf("the backup did not check out: %w", err)
	}
	if err := os.Rename(tmp, outPath); err != nil {
		return 0, nil, err
	}
	return n, m, nil
}
