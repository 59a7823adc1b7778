// {{name}}: a wasmsocket plugin. It answers every text message with
// `NAME #N: TEXT`, counts messages in host-kept `state` (which survives
// reloads and new instances), and writes a `log` line for each.
//
// build.sh generates the bindings (websocket_plugin.h) with `wit-bindgen c`.
// Exported functions own their arguments: free them before returning. WIT
// strings are UTF-8 with a length, not NUL-terminated: print them with %.*s.

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "websocket_plugin.h"

typedef websocket_plugin_string_t str_t;
typedef exports_wasmsocket_plugin_handler_connection_id_t conn_id_t;

// printf into a new string; free it with websocket_plugin_string_free.
static str_t format(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int len = vsnprintf(NULL, 0, fmt, args);
    va_end(args);
    if (len < 0) len = 0;
    str_t out = {malloc((size_t)len + 1), (size_t)len};
    va_start(args, fmt);
    vsnprintf((char *)out.ptr, (size_t)len + 1, fmt, args);
    va_end(args);
    return out;
}

// Writes a line to the host's log (and the test page's console).
static void log_info(str_t line) {
    wasmsocket_plugin_log_log(WASMSOCKET_PLUGIN_LOG_LEVEL_INFO, &line);
    websocket_plugin_string_free(&line);
}

// Counts this message in the connection's host-kept state (a decimal string).
static uint64_t count(conn_id_t *id) {
    uint64_t n = 0;
    websocket_plugin_option_list_u8_t saved;
    wasmsocket_plugin_state_host_error_t err;
    if (wasmsocket_plugin_state_get(id, &saved, &err)) {
        for (size_t i = 0; saved.is_some && i < saved.val.len; i++) n = n * 10 + (saved.val.ptr[i] - '0');
        websocket_plugin_option_list_u8_free(&saved);
    } else {
        wasmsocket_plugin_types_host_error_free(&err);
    }
    n++;
    str_t digits = format("%" PRIu64, n);
    websocket_plugin_list_u8_t value = {digits.ptr, digits.len};
    if (!wasmsocket_plugin_state_set(id, &value, &err)) wasmsocket_plugin_types_host_error_free(&err);
    websocket_plugin_string_free(&digits);
    return n;
}

void exports_wasmsocket_plugin_handler_on_open(conn_id_t *id, exports_wasmsocket_plugin_handler_request_t *request,
                                               exports_wasmsocket_plugin_handler_open_response_t *ret) {
    log_info(format("%.*s opened %.*s", (int)id->len, id->ptr, (int)request->path.len, request->path.ptr));
    exports_wasmsocket_plugin_handler_request_free(request);
    websocket_plugin_string_free(id);
    ret->tag = WASMSOCKET_PLUGIN_TYPES_OPEN_RESPONSE_ACCEPT;
    ret->val.accept.is_some = false;
}

void exports_wasmsocket_plugin_handler_on_message(conn_id_t *id, exports_wasmsocket_plugin_handler_message_t *message) {
    uint64_t n = count(id);
    if (message->tag == WASMSOCKET_PLUGIN_TYPES_MESSAGE_TEXT) {
        str_t text = message->val.text;
        log_info(format("message %" PRIu64 ": %.*s", n, (int)text.len, text.ptr));
        // The reply replaces the text; the message frees it as usual.
        message->val.text = format("{{name}} #%" PRIu64 ": %.*s", n, (int)text.len, text.ptr);
        websocket_plugin_string_free(&text);
    }
    wasmsocket_plugin_connections_host_error_t err;
    if (!wasmsocket_plugin_connections_send(id, message, &err)) wasmsocket_plugin_types_host_error_free(&err);
    exports_wasmsocket_plugin_handler_message_free(message);
    websocket_plugin_string_free(id);
}

// maybe_close is NULL when the client sent no close frame.
void exports_wasmsocket_plugin_handler_on_close(conn_id_t *id, exports_wasmsocket_plugin_handler_close_frame_t *maybe_close) {
    log_info(format("%.*s closed", (int)id->len, id->ptr));
    if (maybe_close) exports_wasmsocket_plugin_handler_close_frame_free(maybe_close);
    websocket_plugin_string_free(id);
}

// Timers this plugin set with wasmsocket_plugin_timers_set(_room); it sets none.
void exports_wasmsocket_plugin_handler_on_timer(conn_id_t *id, str_t *name) {
    websocket_plugin_string_free(name);
    websocket_plugin_string_free(id);
}

void exports_wasmsocket_plugin_handler_on_room_timer(str_t *room, str_t *name) {
    websocket_plugin_string_free(name);
    websocket_plugin_string_free(room);
}
