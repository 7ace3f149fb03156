package proto

import (
	"encoding/binary"
	"fmt"
)

// dec reads fields from a message body. The first error sticks; slices it
// returns alias the input.
type dec struct {
	b   []byte
	err error
}

func (d *dec) need(n int) bool {
	if d.err != nil {
		return false
	}
	if len(d.b) < n {
		d.err = fmt.Errorf("%w: %d bytes short", ErrMalformed, n-len(d.b))
		return false
	}
	return true
}

func (d *dec) u8() uint8 {
	if !d.need(1) {
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) u16() uint16 {
	if !d.need(2) {
		return 0
	}
	v := binary.BigEndian.Uint16(d.b)
	d.b = d.b[2:]
	return v
}

func (d *dec) u32() uint32 {
	if !d.need(4) {
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *dec) u64() uint64 {
	if !d.need(8) {
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *dec) fixed(n int) []byte {
	if !d.need(n) {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) str8() []byte  { return d.fixed(int(d.u8())) }
func (d *dec) str16() []byte { return d.fixed(int(d.u16())) }

// bytes16 reads a u16 length and that many bytes, at most max.
func (d *dec) bytes16(max int) []byte {
	n := int(d.u16())
	if d.err == nil && n > max {
		d.err = fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, max)
		return nil
	}
	return d.fixed(n)
}

// bool reads a u8 that must be 0 or 1, so each message has one encoding.
func (d *dec) bool() bool {
	v := d.u8()
	if d.err == nil && v > 1 {
		d.err = fmt.Errorf("%w: flag %d is not 0 or 1", ErrMalformed, v)
	}
	return v == 1
}

// done reports the first error, or trailing bytes.
func (d *dec) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b))
	}
	return d.err
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

func appendStr8(b, s []byte) []byte {
	if len(s) > 0xFF {
		panic("proto: str8 field over 255 bytes; callers validate lengths first")
	}
	return append(append(b, byte(len(s))), s...)
}

func appendStr16(b, s []byte) []byte {
	if len(s) > 0xFFFF {
		panic("proto: str16 field over 65535 bytes; callers validate lengths first")
	}
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}
