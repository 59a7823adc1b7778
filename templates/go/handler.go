// {{name}}: a wasmsocket plugin. It answers every text message with
// `NAME #N: TEXT`, counts messages in host-kept `state` (which survives
// reloads and new instances), and writes a `log` line for each.
//
// build.sh generates the bindings (`wit-bindgen go`, module wit_component)
// and compiles this file as their export package,
// export_wasmsocket_plugin_handler: OnOpen, OnMessage, OnClose, OnTimer and
// OnRoomTimer are the exports; the imports are packages such as
// wit_component/wasmsocket_plugin_state.
package export_wasmsocket_plugin_handler

import (
	"fmt"
	"strconv"

	"wit_component/wasmsocket_plugin_connections"
	"wit_component/wasmsocket_plugin_log"
	"wit_component/wasmsocket_plugin_state"
	"wit_component/wasmsocket_plugin_types"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

func OnOpen(id string, request wasmsocket_plugin_types.Request) wasmsocket_plugin_types.OpenResponse {
	wasmsocket_plugin_log.Log(wasmsocket_plugin_log.Level_Info, fmt.Sprintf("%s opened %s", id, request.Path))
	return wasmsocket_plugin_types.MakeOpenResponseAccept(witTypes.None[string]())
}

func OnMessage(id string, message wasmsocket_plugin_types.Message) {
	n := count(id)
	if message.Tag() == wasmsocket_plugin_types.Message_Text {
		text := message.Text()
		wasmsocket_plugin_log.Log(wasmsocket_plugin_log.Level_Info, fmt.Sprintf("message %d: %s", n, text))
		message = wasmsocket_plugin_types.MakeMessageText(fmt.Sprintf("{{name}} #%d: %s", n, text))
	}
	wasmsocket_plugin_connections.Send(id, message)
}

func OnClose(id string, close witTypes.Option[wasmsocket_plugin_types.CloseFrame]) {
	wasmsocket_plugin_log.Log(wasmsocket_plugin_log.Level_Info, id+" closed")
}

// Timers this plugin set with wasmsocket_plugin_timers.Set(Room); it sets none.
func OnTimer(id string, name string) {}

func OnRoomTimer(room string, name string) {}

// count counts this message in the connection's host-kept state.
func count(id string) uint64 {
	var n uint64
	if saved := wasmsocket_plugin_state.Get(id); saved.IsOk() && saved.Ok().IsSome() {
		n, _ = strconv.ParseUint(string(saved.Ok().Some()), 10, 64)
	}
	n++
	wasmsocket_plugin_state.Set(id, []byte(strconv.FormatUint(n, 10)))
	return n
}
