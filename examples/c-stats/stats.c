// Example plugin in C: text comes back reversed (by Unicode code point, so
// UTF-8 stays valid); a binary message gets statistics about its bytes as
// JSON, including a running total of bytes kept in host state.
//
// Built with clang for wasm32-wasi, bindings from `wit-bindgen c`
// (websocket_plugin.h/.c), then `wasm-tools component new` (see build.sh).

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "websocket_plugin.h"

typedef websocket_plugin_string_t str_t;
typedef exports_wasmsocket_plugin_handler_connection_id_t conn_id_t;

static void send_text(conn_id_t *id, const char *text, size_t len) {
    wasmsocket_plugin_connections_message_t reply;
    reply.tag = WASMSOCKET_PLUGIN_TYPES_MESSAGE_TEXT;
    reply.val.text.ptr = (uint8_t *)text;
    reply.val.text.len = len;
    wasmsocket_plugin_connections_host_error_t err;
    if (!wasmsocket_plugin_connections_send(id, &reply, &err)) {
        wasmsocket_plugin_types_host_error_free(&err);
    }
}

// Length of the UTF-8 sequence that starts with byte b (1 for stray bytes).
static size_t utf8_len(uint8_t b) {
    if (b >= 0xF0) return 4;
    if (b >= 0xE0) return 3;
    if (b >= 0xC0) return 2;
    return 1;
}

static void reverse_text(conn_id_t *id, const str_t *text) {
    size_t n = text->len;
    char *out = malloc(n ? n : 1);
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_len(text->ptr[i]);
        if (i + k > n) k = n - i;
        memcpy(out + n - i - k, text->ptr + i, k);
        i += k;
    }
    send_text(id, out, n);
    free(out);
}

static uint32_t crc32(const uint8_t *p, size_t n) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++) crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1u));
    }
    return ~crc;
}

// The running byte total, stored in host state as 8 little-endian bytes.
static uint64_t add_to_total(conn_id_t *id, uint64_t n) {
    uint64_t total = 0;
    websocket_plugin_option_list_u8_t saved;
    wasmsocket_plugin_state_host_error_t err;
    if (wasmsocket_plugin_state_get(id, &saved, &err)) {
        if (saved.is_some && saved.val.len == 8) {
            for (int i = 7; i >= 0; i--) total = (total << 8) | saved.val.ptr[i];
        }
        websocket_plugin_option_list_u8_free(&saved);
    } else {
        wasmsocket_plugin_types_host_error_free(&err);
    }
    total += n;
    uint8_t bytes[8];
    for (int i = 0; i < 8; i++) bytes[i] = (uint8_t)(total >> (8 * i));
    websocket_plugin_list_u8_t value = {bytes, 8};
    if (!wasmsocket_plugin_state_set(id, &value, &err)) wasmsocket_plugin_types_host_error_free(&err);
    return total;
}

static void byte_stats(conn_id_t *id, const websocket_plugin_list_u8_t *data) {
    size_t n = data->len;
    unsigned min = 255, max = 0, distinct = 0;
    uint64_t sum = 0;
    uint8_t seen[256] = {0};
    for (size_t i = 0; i < n; i++) {
        uint8_t b = data->ptr[i];
        if (b < min) min = b;
        if (b > max) max = b;
        sum += b;
        if (!seen[b]) { seen[b] = 1; distinct++; }
    }
    if (n == 0) min = 0;
    uint64_t total = add_to_total(id, n);
    char out[256];
    int len = snprintf(out, sizeof out,
                       "{\"bytes\":%zu,\"min\":%u,\"max\":%u,\"mean\":%.2f,\"distinct\":%u,"
                       "\"crc32\":\"%08x\",\"total\":%llu}",
                       n, min, max, n ? (double)sum / (double)n : 0.0, distinct,
                       (unsigned)crc32(data->ptr, n), (unsigned long long)total);
    send_text(id, out, (size_t)len);
}

// Exported functions own their arguments: free them before returning.
void exports_wasmsocket_plugin_handler_on_open(conn_id_t *id, exports_wasmsocket_plugin_handler_request_t *request,
                                               exports_wasmsocket_plugin_handler_open_response_t *ret) {
    exports_wasmsocket_plugin_handler_request_free(request);
    websocket_plugin_string_free(id);
    ret->tag = WASMSOCKET_PLUGIN_TYPES_OPEN_RESPONSE_ACCEPT;
    ret->val.accept.is_some = false;
}

void exports_wasmsocket_plugin_handler_on_message(conn_id_t *id, exports_wasmsocket_plugin_handler_message_t *message) {
    if (message->tag == WASMSOCKET_PLUGIN_TYPES_MESSAGE_TEXT) {
        reverse_text(id, &message->val.text);
    } else {
        byte_stats(id, &message->val.binary);
    }
    exports_wasmsocket_plugin_handler_message_free(message);
    websocket_plugin_string_free(id);
}

// maybe_close is NULL when the client sent no close frame.
void exports_wasmsocket_plugin_handler_on_close(conn_id_t *id, exports_wasmsocket_plugin_handler_close_frame_t *maybe_close) {
    if (maybe_close) exports_wasmsocket_plugin_handler_close_frame_free(maybe_close);
    websocket_plugin_string_free(id);
}

// No timers here; the world requires the exports. They own their arguments too.
void exports_wasmsocket_plugin_handler_on_timer(conn_id_t *id, str_t *name) {
    websocket_plugin_string_free(name);
    websocket_plugin_string_free(id);
}

void exports_wasmsocket_plugin_handler_on_room_timer(str_t *room, str_t *name) {
    websocket_plugin_string_free(name);
    websocket_plugin_string_free(room);
}
