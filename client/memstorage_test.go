package client

import (
	"errors"
	"io/fs"
	"maps"
	"slices"
	"sync"
	"time"
)

// memStorage is a Storage held in memory, as a browser's would be: the
// client core needs nothing else of the machine.
type memStorage map[string][]byte

var memMu sync.Mutex // guards every memStorage (tests are small)

func (m memStorage) Read(name string) ([]byte, error) {
	memMu.Lock()
	defer memMu.Unlock()
	b, ok := m[name]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return slices.Clone(b), nil
}

func (m memStorage) Create(name string, data []byte) error {
	memMu.Lock()
	defer memMu.Unlock()
	if _, ok := m[name]; ok {
		return fs.ErrExist
	}
	m[name] = slices.Clone(data)
	return nil
}

func (m memStorage) Replace(name string, data []byte) error {
	memMu.Lock()
	defer memMu.Unlock()
	m[name] = slices.Clone(data)
	return nil
}

func (m memStorage) Append(name string, data []byte) error {
	memMu.Lock()
	defer memMu.Unlock()
	m[name] = append(m[name], data...)
	return nil
}

// memDownloads is a Downloads held in memory; saved files stay in it
// under "saved/NAME".
type memDownloads struct{ memStorage }

func (m memDownloads) List() ([]DownloadEntry, error) {
	memMu.Lock()
	defer memMu.Unlock()
	var out []DownloadEntry
	for _, name := range slices.Sorted(maps.Keys(m.memStorage)) {
		out = append(out, DownloadEntry{Name: name, Modified: time.Now()})
	}
	return out, nil
}

func (m memDownloads) Remove(name string) error {
	memMu.Lock()
	defer memMu.Unlock()
	delete(m.memStorage, name)
	return nil
}

func (m memDownloads) OpenPart(name string) (Part, error) {
	return &memPart{m: m.memStorage, name: name}, nil
}

func (m memDownloads) Save(part, name string) (string, error) {
	memMu.Lock()
	defer memMu.Unlock()
	b, ok := m.memStorage[part]
	if !ok {
		return "", errors.New("no such part")
	}
	delete(m.memStorage, part)
	m.memStorage["saved/"+name] = b
	return "saved/" + name, nil
}

type memPart struct {
	m    memStorage
	name string
}

func (p *memPart) WriteAt(b []byte, off int64) (int, error) {
	memMu.Lock()
	defer memMu.Unlock()
	cur := p.m[p.name]
	if need := int(off) + len(b); need > len(cur) {
		cur = append(cur, make([]byte, need-len(cur))...)
	}
	copy(cur[off:], b)
	p.m[p.name] = cur
	return len(b), nil
}

func (p *memPart) Truncate(size int64) error {
	memMu.Lock()
	defer memMu.Unlock()
	cur := p.m[p.name]
	if int(size) <= len(cur) {
		p.m[p.name] = cur[:size]
	} else {
		p.m[p.name] = append(cur, make([]byte, int(size)-len(cur))...)
	}
	return nil
}

func (p *memPart) Sync() error  { return nil }
func (p *memPart) Close() error { return nil }
