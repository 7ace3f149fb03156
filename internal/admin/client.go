package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
