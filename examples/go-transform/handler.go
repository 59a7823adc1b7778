// Example plugin in Go: transforms text in a mode chosen per connection and
// kept in host state.
//
//	/mode NAME   choose rot13 (the default), upper, lower, title, reverse
//	             or snake; replies "mode NAME"
//	/mode        replies the current mode
//	anything else comes back transformed.
//
// Binary messages get an error reply. The mode lives in the host's `state`
// interface, not in a Go global: the host may start a fresh instance at
// any event, and state survives that.
//
// build.sh generates the bindings (`wit-bindgen go`) and places this file in
// their export package, export_wasmsocket_plugin_handler.
package export_wasmsocket_plugin_handler

import (
	"fmt"
	"sort"
	"strings"
	"unicode"

	"wit_component/wasmsocket_plugin_connections"
	"wit_component/wasmsocket_plugin_log"
	"wit_component/wasmsocket_plugin_state"
	"wit_component/wasmsocket_plugin_types"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

const defaultMode = "rot13"

var modes = map[string]func(string) string{
	"rot13":   rot13,
	"upper":   strings.ToUpper,
	"lower":   strings.ToLower,
	"title":   title,
	"reverse": reverse,
	"snake":   snake,
}

func OnOpen(id string, request wasmsocket_plugin_types.Request) wasmsocket_plugin_types.OpenResponse {
	// A mode may be chosen when connecting: /ws/go-transform?mode=upper
	for _, pair := range strings.Split(request.Query, "&") {
		if name, ok := strings.CutPrefix(pair, "mode="); ok {
			if _, known := modes[name]; known {
				wasmsocket_plugin_state.Set(id, []byte(name))
			}
		}
	}
	return wasmsocket_plugin_types.MakeOpenResponseAccept(witTypes.None[string]())
}

func OnMessage(id string, message wasmsocket_plugin_types.Message) {
	if message.Tag() != wasmsocket_plugin_types.Message_Text {
		reply(id, "error: send text")
		return
	}
	text := message.Text()
	if rest, ok := strings.CutPrefix(text, "/mode"); ok && (rest == "" || rest[0] == ' ') {
		name := strings.TrimSpace(rest)
		if name == "" {
			reply(id, "mode "+currentMode(id))
			return
		}
		if _, known := modes[name]; !known {
			reply(id, fmt.Sprintf("error: unknown mode %q (modes: %s)", name, strings.Join(modeNames(), ", ")))
			return
		}
		if res := wasmsocket_plugin_state.Set(id, []byte(name)); res.IsErr() {
			reply(id, "error: could not save the mode")
			return
		}
		wasmsocket_plugin_log.Log(wasmsocket_plugin_log.Level_Debug, "mode "+name)
		reply(id, "mode "+name)
		return
	}
	reply(id, modes[currentMode(id)](text))
}

func OnClose(id string, close witTypes.Option[wasmsocket_plugin_types.CloseFrame]) {}

// No timers here; the world requires the exports.
func OnTimer(id string, name string) {}

func OnRoomTimer(room string, name string) {}

func reply(id, text string) {
	wasmsocket_plugin_connections.Send(id, wasmsocket_plugin_types.MakeMessageText(text))
}

func currentMode(id string) string {
	res := wasmsocket_plugin_state.Get(id)
	if res.IsErr() {
		return defaultMode
	}
	saved := res.Ok()
	if saved.IsNone() {
		return defaultMode
	}
	if name := string(saved.Some()); modes[name] != nil {
		return name
	}
	return defaultMode
}

func modeNames() []string {
	names := make([]string, 0, len(modes))
	for name := range modes {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func rot13(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return 'a' + (r-'a'+13)%26
		case r >= 'A' && r <= 'Z':
			return 'A' + (r-'A'+13)%26
		}
		return r
	}, s)
}

func title(s string) string {
	start := true
	return strings.Map(func(r rune) rune {
		out := r
		if start {
			out = unicode.ToUpper(r)
		} else {
			out = unicode.ToLower(r)
		}
		start = !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '\''
		return out
	}, s)
}

func reverse(s string) string {
	runes := []rune(s)
	for i, j := 0, len(runes)-1; i < j; i, j = i+1, j-1 {
		runes[i], runes[j] = runes[j], runes[i]
	}
	return string(runes)
}

// snake turns "Hello World, fooBar" into "hello_world_foo_bar".
func snake(s string) string {
	var b strings.Builder
	prevLower := false
	pendingSep := false
	for _, r := range s {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			pendingSep = b.Len() > 0
			prevLower = false
			continue
		}
		if (pendingSep || (unicode.IsUpper(r) && prevLower)) && b.Len() > 0 {
			b.WriteByte('_')
		}
		pendingSep = false
		prevLower = unicode.IsLower(r) || unicode.IsDigit(r)
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
