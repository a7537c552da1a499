# libnghttp2's callbacks and the DATA provider of engine_nghttp2.pyx (included at its end: they
# reach NgConn's C fields). Each queues what engine_ng would have found in ngh2's event list.

cdef int _on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud) noexcept:
    cdef NgConn c = <NgConn>ud
    try:
        c.hdrs = []
    except BaseException as exc:
        return c.failed(exc)
    c.hsize = c.hcount = 0
    c.informational = c.has_status = False
    return 0


cdef int _on_header(nghttp2_session *s, const nghttp2_frame *f, nghttp2_rcbuf *name, nghttp2_rcbuf *value,
                    uint8_t flags, void *ud) noexcept:
    cdef NgConn c = <NgConn>ud
    cdef nghttp2_vec nv = nghttp2_rcbuf_get_buf(name)
    cdef nghttp2_vec vv = nghttp2_rcbuf_get_buf(value)
    c.hsize += nv.len + vv.len + 32   # (RFC 9113 §6.5.2's per-field overhead, as ngh2 counts)
    c.hcount += 1
    if c.hsize > c.hlimit or c.hcount > c.climit:
        c.calm = True   # ngh2's DenialOfServiceError: the connection ends with our GOAWAY (receive)
        return NGHTTP2_ERR_CALLBACK_FAILURE
    if nv.len == 7 and nv.base[0] == b':' and nv.base[1] == b's' and nv.base[2] == b't' and nv.base[6] == b's':
        c.has_status = True                       # :status
        c.informational = vv.len > 0 and vv.base[0] == b'1'
    try:
        c.hdrs.append(c.pair(name, value, nv.len + vv.len))
    except BaseException as exc:
        return c.failed(exc)
    return 0


cdef int _on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) noexcept:
    cdef NgConn c = <NgConn>ud
    cdef int t = f.hd.type
    cdef int32_t sid = f.hd.stream_id
    cdef bint end = f.hd.flags & NGHTTP2_FLAG_END_STREAM
    cdef size_t i
    cdef list hdrs
    try:
        if t == NGHTTP2_DATA:
            if end:
                c.push(EV_END, sid, 0, False, None)
        elif t == NGHTTP2_HEADERS:
            hdrs, c.hdrs = c.hdrs, None
            if c.informational:
                return 0   # a 1xx response (ngh2's InformationalResponseReceived: engine_ng ignores it)
            if f.headers.cat == NGHTTP2_HCAT_REQUEST or f.headers.cat == NGHTTP2_HCAT_RESPONSE or (
                    f.headers.cat == NGHTTP2_HCAT_HEADERS and not c.server and c.has_status):
                # (a client's final response after a 1xx comes as HCAT_HEADERS: the one with :status)
                c.push(EV_HEAD, sid, 0, end, hdrs)
            elif f.headers.cat == NGHTTP2_HCAT_HEADERS:
                c.push(EV_TRAILERS, sid, 0, False, hdrs)
        elif t == NGHTTP2_RST_STREAM:
            c.peer_rst = sid
            c.push(EV_RESET, sid, f.rst_stream.error_code, True, None)
        elif t == NGHTTP2_WINDOW_UPDATE:
            c.push(EV_WINDOW, sid, 0, False, None)
        elif t == NGHTTP2_SETTINGS:
            if f.hd.flags & NGHTTP2_FLAG_ACK:
                return 0
            for i in range(f.settings.niv):
                if f.settings.iv[i].settings_id == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS:
                    c.peer_max = f.settings.iv[i].value
                elif f.settings.iv[i].settings_id == NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE:
                    c.peer_window = f.settings.iv[i].value
            c.push(EV_WINDOW, 0, 0, False, None)
        elif t == NGHTTP2_GOAWAY:
            c.got_goaway = True
            c.push(EV_GOAWAY, 0, f.goaway.last_stream_id, False, None)
    except BaseException as exc:
        return c.failed(exc)
    return 0


cdef int _on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t n,
                        void *ud) noexcept:
    cdef NgConn c = <NgConn>ud
    try:
        c.push(EV_DATA, sid, 0, False, PyBytes_FromStringAndSize(<const char *>data, n))
    except BaseException as exc:
        return c.failed(exc)
    return 0


cdef int _on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud) noexcept:
    cdef NgConn c = <NgConn>ud
    cdef object o
    try:
        o = c.outs.pop(sid, None)
        if o is not None:
            c.queued -= (<_Out>o).queued()
        if code and sid == c.peer_rst:
            c.peer_rst = 0   # the peer's reset: already reported (as by_peer)
        elif code:  # libnghttp2 reset it, or it was refused: reported as not the peer's
            c.push(EV_RESET, sid, code, False, None)
    except BaseException as exc:
        return c.failed(exc)
    return 0


cdef int _on_frame_not_send(nghttp2_session *s, const nghttp2_frame *f, int err, void *ud) noexcept:
    """A request's HEADERS libnghttp2 would not send (GOAWAY from the node meanwhile): no stream was
    opened, so no close follows; its owner hears of it as REFUSED_STREAM, not the peer's."""
    cdef NgConn c = <NgConn>ud
    cdef object o
    if f.hd.type != NGHTTP2_HEADERS or f.headers.cat != NGHTTP2_HCAT_REQUEST or c.server:
        return 0
    if nghttp2_session_find_stream(s, f.hd.stream_id) != NULL:
        return 0   # (opened: its close is reported)
    try:
        o = c.outs.pop(f.hd.stream_id, None)
        if o is not None:
            c.queued -= (<_Out>o).queued()
        c.push(EV_RESET, f.hd.stream_id, NGHTTP2_REFUSED_STREAM, False, None)
    except BaseException as exc:
        return c.failed(exc)
    return 0


cdef ssize_t _read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length, uint32_t *flags,
                   nghttp2_data_source *src, void *ud) noexcept:
    """The data provider of every stream with a body: its ``_Out``'s bytes, then its end (and trailers)."""
    cdef _Out o = <_Out>src.ptr
    cdef NgConn c = <NgConn>ud
    cdef size_t n = o.end - o.off
    if n > length:
        n = length
    if n:
        memcpy(buf, o.buf + o.off, n)
        o.off += n
        c.queued -= n
    if o.off == o.end:
        if o.eof:
            flags[0] |= NGHTTP2_DATA_FLAG_EOF
            if o.tnva != NULL:
                flags[0] |= NGHTTP2_DATA_FLAG_NO_END_STREAM
                nghttp2_submit_trailer(s, sid, o.tnva, o.tn)
                free(o.tnva)
                o.tnva = NULL
                o.tkeep = None
        elif n == 0:
            return NGHTTP2_ERR_DEFERRED
    return n


cdef void _make_callbacks() noexcept:
    global _callbacks
    nghttp2_session_callbacks_new(&_callbacks)
    nghttp2_session_callbacks_set_on_begin_headers_callback(_callbacks, _on_begin_headers)
    nghttp2_session_callbacks_set_on_header_callback2(_callbacks, _on_header)
    nghttp2_session_callbacks_set_on_frame_recv_callback(_callbacks, _on_frame_recv)
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(_callbacks, _on_data_chunk)
    nghttp2_session_callbacks_set_on_stream_close_callback(_callbacks, _on_stream_close)
    nghttp2_session_callbacks_set_on_frame_not_send_callback(_callbacks, _on_frame_not_send)


_make_callbacks()
