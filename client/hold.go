package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"

	"securefastchat/proto"
	"securefastchat/termtext"
)

// A user may hold their contacts' new devices (SetHoldNewDevices). With
// the hold on, a contact's device is trusted if it was on the contact's
// list when this client first saw the list with the hold on (trust on
// first use, as keys are pinned), or if the user approved it since
// (ApproveDevices). While a contact has a device neither, nothing is
// sealed for the contact: no direct message, receipt or group key. The
// user checks the new device with the contact (its id, out of band),
// then approves it.
//
// The record ("devicehold", sealed): a first line "on" or "off", then a
// line "user id id ..." (ids in hex) per contact whose devices are known.

// ErrDevicesHeld: a contact has a device the user has not approved, and
// the hold is on; see DevicesHeldError.
var ErrDevicesHeld = errors.New("client: a contact has a device you have not approved")

// DevicesHeldError names the contact and the devices not approved.
type DevicesHeldError struct {
	User    string
	Devices []proto.Device
}

func (e *DevicesHeldError) Error() string {
	var names []string
	for _, d := range e.Devices {
		names = append(names, fmt.Sprintf("%s (%016x)", termtext.Line(d.Name), d.ID))
	}
	return fmt.Sprintf("client: %s has a device you have not approved: %s; check its id with %s, then approve it ('securefastchat contact approve %s', or /devices approve %s in the chat)",
		e.User, strings.Join(names, ", "), e.User, e.User, e.User)
}

// Is makes errors.Is(err, ErrDevicesHeld) hold.
func (e *DevicesHeldError) Is(target error) bool { return target == ErrDevicesHeld }

// deviceHoldMagic: the devicehold record has been sealed since its first
// version.
const deviceHoldMagic = "SFCDVH1"

// deviceHold is the hold setting and the devices approved. Owner: the
// Client; mu guards the fields below it and the record.
type deviceHold struct {
	st   Storage
	name string
	key  *[32]byte

	mu       sync.Mutex
	loaded   bool
	on       bool
	approved map[string][]uint64
}

func (h *deviceHold) loadLocked() error {
	if h.loaded {
		return nil
	}
	h.approved = map[string][]uint64{}
	b, _, err := readSealed(h.st, h.key, deviceHoldMagic, h.name)
	if errors.Is(err, fs.ErrNotExist) {
		h.loaded = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("client: reading the device hold: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	switch lines[0] {
	case "on":
		h.on = true
	case "off":
	default:
		return fmt.Errorf("client: the device hold record starts with %q, not on or off", termtext.Line(lines[0]))
	}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) < 1 {
			continue
		}
		var ids []uint64
		for _, x := range f[1:] {
			id, err := strconv.ParseUint(x, 16, 64)
			if err != nil {
				return fmt.Errorf("client: the device hold record: %q is not a device id", termtext.Line(x))
			}
			ids = append(ids, id)
		}
		h.approved[f[0]] = ids
	}
	h.loaded = true
	return nil
}

func (h *deviceHold) writeLocked() error {
	var b strings.Builder
	if h.on {
		b.WriteString("on\n")
	} else {
		b.WriteString("off\n")
	}
	users := make([]string, 0, len(h.approved))
	for u := range h.approved {
		users = append(users, u)
	}
	slices.Sort(users)
	for _, u := range users {
		b.WriteString(u)
		for _, id := range h.approved[u] {
			fmt.Fprintf(&b, " %016x", id)
		}
		b.WriteByte('\n')
	}
	return writeSealed(h.st, h.key, deviceHoldMagic, h.name, []byte(b.String()))
}

// isOn reports whether the hold is on.
func (h *deviceHold) isOn() (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	err := h.loadLocked()
	return h.on, err
}

// set turns the hold on or off. Turning it on forgets what was approved
// before: each contact's list is trusted as it is next seen.
func (h *deviceHold) set(on bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.loadLocked(); err != nil {
		return err
	}
	if on && !h.on {
		h.approved = map[string][]uint64{}
	}
	h.on = on
	return h.writeLocked()
}

// check returns the devices of user's list (devs) that are held: none if
// the hold is off. The first list seen of a user is trusted as it is.
func (h *deviceHold) check(user string, devs []proto.Device) ([]proto.Device, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.loadLocked(); err != nil || !h.on {
		return nil, err
	}
	ok, seen := h.approved[user]
	if !seen {
		return nil, h.approveLocked(user, devs)
	}
	var held []proto.Device
	for _, d := range devs {
		if !slices.Contains(ok, d.ID) {
			held = append(held, d)
		}
	}
	return held, nil
}

// approve trusts user's devices devs from now on.
func (h *deviceHold) approve(user string, devs []proto.Device) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.loadLocked(); err != nil {
		return err
	}
	return h.approveLocked(user, devs)
}

func (h *deviceHold) approveLocked(user string, devs []proto.Device) error {
	ids := append([]uint64(nil), h.approved[user]...)
	for _, d := range devs {
		if !slices.Contains(ids, d.ID) {
			ids = append(ids, d.ID)
		}
	}
	if len(ids) > proto.MaxHoldApproved {
		// Removed devices are kept only so far: the list's own come last.
		ids = ids[len(ids)-proto.MaxHoldApproved:]
	}
	h.approved[user] = ids
	return h.writeLocked()
}

// snapshot returns the setting and the devices approved, for a new device
// of the account (link.go).
func (h *deviceHold) snapshot() (bool, []proto.LinkHoldContact, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.loadLocked(); err != nil {
		return false, nil, err
	}
	var out []proto.LinkHoldContact
	for u, ids := range h.approved {
		out = append(out, proto.LinkHoldContact{User: []byte(u), Approved: ids[max(0, len(ids)-proto.MaxHoldApproved):]})
	}
	slices.SortFunc(out, func(a, b proto.LinkHoldContact) int { return strings.Compare(string(a.User), string(b.User)) })
	return h.on, out, nil
}

// adopt takes the setting and the devices approved from the account's
// existing device, on a new device (AddDevice).
func (h *deviceHold) adopt(m *proto.LinkHold) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.loadLocked(); err != nil {
		return err
	}
	h.on = m.On
	for _, c := range m.Contacts {
		h.approved[string(c.User)] = append([]uint64(nil), c.Approved...)
	}
	return h.writeLocked()
}

// checkHeld refuses to seal for user (another account) while a device of
// devs is held.
func (c *Client) checkHeld(user string, devs []proto.Device) error {
	if user == c.user {
		return nil // one's own devices are one's own to add
	}
	held, err := c.hold.check(user, devs)
	if err != nil {
		return err
	}
	if len(held) > 0 {
		return &DevicesHeldError{User: user, Devices: held}
	}
	return nil
}

// HoldNewDevices reports whether contacts' new devices are held.
func (c *Client) HoldNewDevices() bool {
	on, _ := c.hold.isOn()
	return on
}

// SetHoldNewDevices turns the hold on contacts' new devices on or off
// (kept in this home). Turned on, each contact's devices as they are next
// seen are trusted, and any added after that is held until ApproveDevices.
func (c *Client) SetHoldNewDevices(on bool) error { return c.hold.set(on) }

// HeldDevices returns user's devices that are held: on their list (read
// now), and neither trusted when first seen nor approved since. None
// while the hold is off.
func (c *Client) HeldDevices(ctx context.Context, user string) ([]proto.Device, error) {
	canon, err := proto.CanonicalUsername(user)
	if err != nil {
		return nil, err
	}
	if on, err := c.hold.isOn(); err != nil || !on || canon == c.user {
		return nil, err
	}
	devs, err := c.memberDevices(ctx, canon, true)
	if err != nil {
		return nil, err
	}
	return c.hold.check(canon, devs)
}

// ApproveDevices trusts every device on user's list as it is now (read
// now): the user has checked the new ones with them.
func (c *Client) ApproveDevices(ctx context.Context, user string) ([]proto.Device, error) {
	canon, err := proto.CanonicalUsername(user)
	if err != nil {
		return nil, err
	}
	devs, err := c.memberDevices(ctx, canon, true)
	if err != nil {
		return nil, err
	}
	return devs, c.hold.approve(canon, devs)
}
