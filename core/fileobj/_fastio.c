/* uringstack.fileobj._fastio: the per-chunk steps of uringstack's buffered file objects, in C.
 *
 * io.BufferedReader calls its raw file's readinto once per chunk (a
 * shutil.copyfileobj 64 KiB read, a hashlib.file_digest 256 KiB read), and
 * shutil.copyfileobj calls its destination's write once per chunk.  Written
 * in Python, those steps' frames cost microseconds a call over the
 * built-in's (measured: docs/api.md), a fifth of a hot 64 KiB read.  Two
 * objects do the common case of each with no Python frame, and hand every
 * other case to the Python method they shortcut:
 *
 * CachedReadInto, installed as a uringstack.FileIO's instance attribute
 * ``readinto`` (which io.BufferedReader looks up on the instance): the Python
 * readinto of a buffered io_uring file first copies what the page cache holds
 * with preadv2(RWF_NOWAIT) at the file position.  This copies a read the page
 * cache holds in full and returns its length; anything else goes to
 * ``file._readinto_fallback(b, copied)``:
 *
 *   copied > 0   the first *copied* bytes are in b (the position moved past
 *                them): read the rest;
 *   copied None  nothing of it is cached (EAGAIN): read it all through the ring;
 *   copied -1    not tried, or the copy failed: the whole Python path.
 *
 * The same guards as the Python step: the backend's switches, read per call
 * (it copies cached reads: ``_reads_cached_inline``; no ``completion_hook``
 * wants to hear of each read), the file's lock
 * (taken without blocking; held, the Python path waits for it), the handle's
 * in-flight tracker (counted in before the descriptor is used, so a close()
 * from another thread waits for the copy; refused once closed), and
 * uringstack.ring.forking's generation (a fork child's reads take the Python
 * path, which refuses a handle inherited through fork).  The GIL is released during the copy, as
 * io.FileIO releases it; the buffer is exported for that time, so a
 * bytearray cannot be resized under it.
 *
 * HeldWrite, installed as a write-only uringstack.open() file's instance
 * attribute ``write`` (uringstack.fileobj.openfile.BufferedWriter): its
 * Python write keeps a large ``bytes`` object instead of copying it into the
 * buffer (FileIO._hold: one gathered write per buffer's worth).  This does
 * that keeping, as FileIO._hold does, and hands everything else to the
 * Python methods (see HeldWrite's own comment).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stddef.h>
#include <sys/uio.h>


/* uringstack.ring.forking, whose _generation a fork child's handler bumps: the one
 * record of which process this is, read per call (a dict lookup) rather than kept twice. */
static PyObject *forking_module, *generation_name;

/* The current fork generation into *out; -1 with an error set. */
static int
current_generation(long *out)
{
    PyObject *g = PyObject_GetAttr(forking_module, generation_name);
    if (g == NULL)
        return -1;
    *out = PyLong_AsLong(g);
    Py_DECREF(g);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

typedef struct {
    PyObject_HEAD
    int fd;
    int armed;
    long generation;      /* forking._generation when installed */
    Py_ssize_t max_count; /* the backend's MAX_RW_COUNT: larger reads take the Python step */
    PyObject *acquire;   /* the file lock's bound acquire */
    PyObject *release;   /* ... and release */
    PyObject *backend;   /* the handle's backend: its switches are read per call */
    PyObject *tracker;   /* the handle's InflightTracker: reads its _closed */
    PyObject *entered;   /* its _entered count (next() counts a start in) */
    PyObject *left;      /* its _left count (next() counts it out) */
    PyObject *file_ref;  /* weakref to the uringstack.FileIO */
    vectorcallfunc vectorcall;
} CachedReadInto;

static PyObject *closed_name, *reads_cached_name, *hook_name, *fallback_name;

/* A backend switch the Python step reads per call: 1 when *switch_name* is True and no
 * completion hook wants to hear of each op (then the C step may do the op itself).  A
 * switch still None is measured first through the method *measure_name* (NULL: none). */
static int
backend_allows(PyObject *backend, PyObject *switch_name, PyObject *measure_name)
{
    PyObject *on = PyObject_GetAttr(backend, switch_name);
    if (on == Py_None && measure_name != NULL) {
        Py_DECREF(on);
        on = PyObject_CallMethodNoArgs(backend, measure_name);
    }
    if (on == NULL)
        return -1;
    int yes = on == Py_True;
    Py_DECREF(on);
    if (!yes)
        return 0;
    PyObject *hook = PyObject_GetAttr(backend, hook_name);
    if (hook == NULL)
        return -1;
    Py_DECREF(hook);
    return hook == Py_None;
}

static int
next_count(PyObject *count)
{
    PyObject *v = PyIter_Next(count);
    if (v == NULL)
        return -1;
    Py_DECREF(v);
    return 0;
}

/* Count an op in on the handle's InflightTracker, as its Python start does: 1 counted in
 * (the caller counts it out with next_count(left) once the op is over); 0 refused, the
 * tracker closing (counted out again: the Python step raises or holds); -1 with an error
 * set (counted out again where it had been counted in). */
static int
tracker_enter(PyObject *tracker, PyObject *entered, PyObject *left)
{
    if (next_count(entered) < 0)
        return -1;
    PyObject *closed = PyObject_GetAttr(tracker, closed_name);
    int is_closed = closed == NULL ? -1 : PyObject_IsTrue(closed);
    Py_XDECREF(closed);
    if (is_closed == 0)
        return 1;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    int counted_out = next_count(left);
    if (et != NULL) {
        PyErr_Restore(et, ev, tb); /* the check's own error (replacing any of the count's) */
        return -1;
    }
    return counted_out < 0 ? -1 : 0;
}

static PyObject *
call_fallback(CachedReadInto *self, PyObject *b, PyObject *copied)
{
    PyObject *file = PyWeakref_GetObject(self->file_ref);
    if (file == NULL)
        return NULL;
    if (file == Py_None) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on closed file.");
        return NULL;
    }
    Py_INCREF(file);
    /* looked up per call (only the slow paths come here): the file's own method,
     * which a test or a subclass may replace */
    PyObject *args[3] = {file, b, copied};
    PyObject *res = PyObject_VectorcallMethod(fallback_name, args, 3, NULL);
    Py_DECREF(file);
    return res;
}

/* Release a lock through its bound *release*, keeping an error already set (the call
 * that failed under it); -1 with the release's own error set when it failed (then any
 * earlier one is dropped). */
static int
release_keeping_error(PyObject *release)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *r = PyObject_CallNoArgs(release);
    if (r == NULL) {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        return -1;
    }
    Py_DECREF(r);
    PyErr_Restore(et, ev, tb);
    return 0;
}

/* A lock's bound *acquire* called without blocking: 1 taken, 0 held elsewhere, -1 error. */
static int
try_acquire(PyObject *acquire)
{
    PyObject *got = PyObject_CallOneArg(acquire, Py_False);
    if (got == NULL)
        return -1;
    int taken = got == Py_True;
    Py_DECREF(got);
    return taken;
}

/* The argument check of a one-argument call (readinto(b), write(b)). */
static int
check_one_arg(const char *name, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly one argument (%zd given)", name, nargs);
        return -1;
    }
    return 0;
}

static PyObject *
cached_readinto_call(CachedReadInto *self, PyObject *b)
{
    PyObject *minus_one = NULL, *res = NULL;
    Py_buffer view;
    PyTypeObject *t = Py_TYPE(b);

    long generation;
    if (!self->armed || (t != &PyByteArray_Type && t != &PyMemoryView_Type))
        goto whole_python_path;
    if (current_generation(&generation) < 0)
        return NULL;
    if (generation != self->generation)
        goto whole_python_path;
    int allowed = backend_allows(self->backend, reads_cached_name, NULL);
    if (allowed < 0)
        return NULL;
    if (!allowed)
        goto whole_python_path;
    if (PyObject_GetBuffer(b, &view, PyBUF_WRITABLE) < 0) {
        /* read-only, not contiguous, released: the Python path raises what io.FileIO would */
        PyErr_Clear();
        goto whole_python_path;
    }
    if (view.len <= 0 || view.len > self->max_count) {
        PyBuffer_Release(&view);
        goto whole_python_path;
    }
    int locked = try_acquire(self->acquire);
    if (locked < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (!locked) {
        /* another thread's read or write holds the file: the Python path waits its turn */
        PyBuffer_Release(&view);
        goto whole_python_path;
    }
    int entered = tracker_enter(self->tracker, self->entered, self->left);
    if (entered < 0)
        goto fail_locked;
    if (!entered) {
        /* closing: the Python path raises the closed-file error */
        PyBuffer_Release(&view);
        minus_one = PyLong_FromLong(-1);
        if (minus_one != NULL)
            res = call_fallback(self, b, minus_one);
        goto release;
    }

    struct iovec iov = {view.buf, (size_t)view.len};
    ssize_t n;
    int err;
    Py_BEGIN_ALLOW_THREADS
    n = preadv2(self->fd, &iov, 1, -1, RWF_NOWAIT);
    err = errno;
    Py_END_ALLOW_THREADS
    Py_ssize_t want = view.len;
    PyBuffer_Release(&view);
    if (next_count(self->left) < 0)
        goto fail_locked_view_released;
    if (n == want || n == 0) {
        /* all of it, or the end of file: read(2)'s answer */
        res = PyLong_FromSsize_t(n);
    } else if (n > 0) {
        PyObject *copied = PyLong_FromSsize_t(n);
        if (copied != NULL) {
            /* still under the lock: the rest is read where this copy stopped */
            res = call_fallback(self, b, copied);
            Py_DECREF(copied);
        }
    } else if (err == EAGAIN) {
        res = call_fallback(self, b, Py_None);
    } else {
        /* an error, a signal, or RWF_NOWAIT refused: the Python path retries it and
         * reports (or remembers the refusal: the backend switch read above then
         * sends every later call there) */
        minus_one = PyLong_FromLong(-1);
        if (minus_one != NULL)
            res = call_fallback(self, b, minus_one);
    }
release:
    Py_XDECREF(minus_one);
    if (release_keeping_error(self->release) < 0) {
        Py_XDECREF(res);
        return NULL;
    }
    return res;

fail_locked:
    PyBuffer_Release(&view);
fail_locked_view_released:
    /* the error that brought us here stays set; the lock is still ours to release */
    (void)release_keeping_error(self->release);
    return NULL;

whole_python_path:
    minus_one = PyLong_FromLong(-1);
    if (minus_one == NULL)
        return NULL;
    res = call_fallback(self, b, minus_one);
    Py_DECREF(minus_one);
    return res;
}

static PyObject *
cached_readinto_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (check_one_arg("readinto", nargsf, kwnames) < 0)
        return NULL;
    return cached_readinto_call((CachedReadInto *)callable, args[0]);
}

static int
cached_readinto_init(CachedReadInto *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "lock", "backend", "tracker", "file", "max_count", NULL};
    int fd;
    PyObject *lock, *backend, *tracker, *file;
    Py_ssize_t max_count;
    long generation;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOOOOn:CachedReadInto", kwlist, &fd, &lock, &backend,
                                     &tracker, &file, &max_count))
        return -1;
    if (fd < 0 || max_count < 1) {
        PyErr_SetString(PyExc_ValueError, "CachedReadInto needs a descriptor and a positive max_count");
        return -1;
    }
    if (current_generation(&generation) < 0)
        return -1;
    PyObject *acquire = PyObject_GetAttrString(lock, "acquire");
    PyObject *release = acquire ? PyObject_GetAttrString(lock, "release") : NULL;
    PyObject *entered = release ? PyObject_GetAttrString(tracker, "_entered") : NULL;
    PyObject *left = entered ? PyObject_GetAttrString(tracker, "_left") : NULL;
    PyObject *file_ref = left ? PyWeakref_NewRef(file, NULL) : NULL;
    if (file_ref == NULL) {
        Py_XDECREF(acquire);
        Py_XDECREF(release);
        Py_XDECREF(entered);
        Py_XDECREF(left);
        return -1;
    }
    if (!PyIter_Check(entered) || !PyIter_Check(left)) {
        PyErr_SetString(PyExc_TypeError, "tracker counts must be iterators");
        Py_DECREF(acquire);
        Py_DECREF(release);
        Py_DECREF(entered);
        Py_DECREF(left);
        Py_DECREF(file_ref);
        return -1;
    }
    Py_XSETREF(self->acquire, acquire);
    Py_XSETREF(self->release, release);
    Py_INCREF(backend);
    Py_XSETREF(self->backend, backend);
    Py_INCREF(tracker);
    Py_XSETREF(self->tracker, tracker);
    Py_XSETREF(self->entered, entered);
    Py_XSETREF(self->left, left);
    Py_XSETREF(self->file_ref, file_ref);
    self->fd = fd;
    self->generation = generation;
    self->max_count = max_count;
    self->armed = 1;
    self->vectorcall = cached_readinto_vectorcall;
    return 0;
}

static PyObject *
cached_readinto_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    CachedReadInto *self = (CachedReadInto *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->fd = -1;
        self->vectorcall = cached_readinto_vectorcall;
    }
    return (PyObject *)self;
}

static int
cached_readinto_traverse(CachedReadInto *self, visitproc visit, void *arg)
{
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->backend);
    Py_VISIT(self->tracker);
    Py_VISIT(self->entered);
    Py_VISIT(self->left);
    Py_VISIT(self->file_ref);
    return 0;
}

static int
cached_readinto_clear(CachedReadInto *self)
{
    self->armed = 0;
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->backend);
    Py_CLEAR(self->tracker);
    Py_CLEAR(self->entered);
    Py_CLEAR(self->left);
    Py_CLEAR(self->file_ref);
    return 0;
}

static void
cached_readinto_dealloc(CachedReadInto *self)
{
    PyObject_GC_UnTrack(self);
    cached_readinto_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
cached_readinto_disarm(CachedReadInto *self, PyObject *Py_UNUSED(ignored))
{
    self->armed = 0;
    Py_RETURN_NONE;
}

static PyObject *
cached_readinto_get_armed(CachedReadInto *self, void *Py_UNUSED(closure))
{
    long generation;
    if (current_generation(&generation) < 0)
        return NULL;
    return PyBool_FromLong(self->armed && self->generation == generation);
}

static PyMethodDef cached_readinto_methods[] = {
    {"disarm", (PyCFunction)cached_readinto_disarm, METH_NOARGS,
     "Send every later call to the fallback (the file stopped reading at its position)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cached_readinto_getset[] = {
    {"armed", (getter)cached_readinto_get_armed, NULL,
     "True while calls copy cached reads here (not disarmed, not in a fork child).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CachedReadIntoType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "uringstack.fileobj._fastio.CachedReadInto",
    .tp_doc = PyDoc_STR(
        "CachedReadInto(fd, lock, backend, tracker, file): readinto(b) of a buffered io_uring "
        "uringstack.FileIO whose page-cache copy runs in C (see the module's source)."),
    .tp_basicsize = sizeof(CachedReadInto),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = cached_readinto_new,
    .tp_init = (initproc)cached_readinto_init,
    .tp_dealloc = (destructor)cached_readinto_dealloc,
    .tp_traverse = (traverseproc)cached_readinto_traverse,
    .tp_clear = (inquiry)cached_readinto_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(CachedReadInto, vectorcall),
    .tp_methods = cached_readinto_methods,
    .tp_getset = cached_readinto_getset,
};

/* ---- HeldWrite -------------------------------------------------------------------------
 *
 * write(b) of uringstack.fileobj.openfile.BufferedWriter over a holding FileIO,
 * the same steps as the Python method (BufferedWriter.write, then FileIO._hold):
 *
 *   not a ``bytes`` of hold_min bytes or more (or the file re-opened or closed
 *   since: its ``_held`` is not this one): io.BufferedWriter.write, in C;
 *   else io.BufferedWriter.flush (the buffer's bytes go first; a ValueError,
 *   closed or detached, makes it io.BufferedWriter.write, for the built-in's
 *   error in its words), then, under the file's lock (taken without
 *   blocking; held by another thread, FileIO._hold waits for it): the first
 *   held chunk records the position (lseek), the chunk is appended to a new
 *   list (a stored list is never changed: FileIO._unmake and _release read
 *   it), and once the limit is held FileIO._release writes it all.
 *
 * The held object stays alive through the reference, and ``bytes`` cannot
 * change, which is why only ``bytes`` is kept.
 *
 * Where nothing is held, the chunk is written here at once instead, with one
 * pwritev2 at the file position (offset -1: it moves the position as
 * write(2) does): holding exists to spread the Python step's fixed cost
 * (FileIO._release, the handle's gathered write, an lseek before and after)
 * over a buffer's worth of chunks, and this write has none of it.  Written
 * earlier than the buffer would have written it, which a buffered writer
 * may always do (io.BufferedWriter writes a chunk larger than its buffer at
 * once).  Only where that Python step would do the same pwrite in the
 * caller's thread: a backend whose waited buffered writes are
 * done inline (``_inline_writes`` True, measured by its first Python write),
 * no completion hook, on a ring any thread may use, not in a fork child,
 * counted in the handle's in-flight tracker (close() waits for it; refused
 * once closed; where a guard says no, the chunk is held as the Python step
 * would hold it), under the file's lock, with the GIL released.  A write
 * that fails with nothing written, or is cut short (what reached the file
 * stays, the position after it), hands what is left to the Python step,
 * held and written at once: its retry raises here whatever fails, as the
 * built-in's write of a chunk larger than its buffer would. */

typedef struct {
    PyObject_HEAD
    int fd;
    int direct;           /* 1 while a chunk may be written here (see held_write_direct) */
    long generation;      /* forking._generation when installed */
    Py_ssize_t hold_min;
    Py_ssize_t limit;
    Py_ssize_t max_count; /* the backend's MAX_RW_COUNT: larger chunks take the Python step */
    PyObject *writer_ref; /* weakref to the BufferedWriter */
    PyObject *raw;        /* its uringstack.FileIO */
    PyObject *held;       /* the FileIO's _Held at install time */
    PyObject *acquire;
    PyObject *release;
    PyObject *backend;    /* the handle's backend, or NULL: no direct writes */
    PyObject *tracker;    /* the handle's InflightTracker */
    PyObject *entered;    /* its _entered count */
    PyObject *left;       /* its _left count */
    Py_ssize_t direct_writes; /* chunks written here (read by the tests) */
    vectorcallfunc vectorcall;
} HeldWrite;

static PyObject *io_write, *io_flush; /* io.BufferedWriter.write / .flush */
static PyObject *chunks_name, *nbytes_name, *pos_name, *held_name, *closed_flag_name, *hold_name,
    *release_name;
static PyObject *inline_writes_name, *writes_inline_name, *backend_closed_name;

/* 1 when the backend's Python step would write this chunk in the caller's thread, with
 * nobody to tell of it: its waited buffered writes are inline (measured at the file's
 * first write), no completion hook, not closed. */
static int
backend_writes_here(PyObject *backend)
{
    int allowed = backend_allows(backend, inline_writes_name, writes_inline_name);
    if (allowed <= 0)
        return allowed;
    PyObject *closed = PyObject_GetAttr(backend, backend_closed_name);
    if (closed == NULL)
        return -1;
    Py_DECREF(closed);
    return closed == Py_False;
}

/* Write chunk *b* (*size* bytes, nothing held) at the file position here; the caller
 * holds the file's lock.  1 with *out* set (the result, or NULL with an error set) when
 * done here; 0 when the Python step is to write it (nothing was written, nothing changed). */
static int
held_write_direct(HeldWrite *self, PyObject *b, Py_ssize_t size, PyObject **out)
{
    long generation;
    if (current_generation(&generation) < 0)
        goto failed;
    if (generation != self->generation || size > self->max_count)
        return 0;
    int allowed = backend_writes_here(self->backend);
    if (allowed < 0)
        goto failed;
    if (!allowed)
        return 0;
    int entered = tracker_enter(self->tracker, self->entered, self->left);
    if (entered < 0)
        goto failed;
    if (!entered)
        return 0; /* closing: the chunk is held, as by the Python step */
    /* the bytes object cannot change or go away: the caller holds a reference */
    struct iovec iov = {PyBytes_AS_STRING(b), (size_t)size};
    ssize_t n;
    int err;
    Py_BEGIN_ALLOW_THREADS
    n = pwritev2(self->fd, &iov, 1, -1, 0);
    err = errno;
    Py_END_ALLOW_THREADS
    if (next_count(self->left) < 0) {
        /* (only a MemoryError could; what the write did stands: the position says it) */
        goto failed;
    }
    if (n == size) {
        self->direct_writes++;
        *out = PyLong_FromSsize_t(size);
        return 1;
    }
    if (n < 0 && (err == ENOSYS || err == EPERM || err == EOPNOTSUPP)) {
        self->direct = 0; /* pwritev2 refused (a seccomp filter): the Python step from now on */
        return 0;
    }
    /* failed with nothing written (n <= 0), or cut short (the first n bytes are in the
     * file, the position after them): the Python step holds the rest and writes it at
     * once, so its write, retried, raises here what fails, as a write(2) of it would */
    PyObject *rest = b;
    Py_INCREF(rest);
    if (n > 0) {
        self->direct_writes++;
        Py_SETREF(rest, PyBytes_FromStringAndSize(PyBytes_AS_STRING(b) + n, size - n));
        if (rest == NULL)
            goto failed;
    }
    PyObject *args[2] = {self->raw, rest};
    PyObject *r = PyObject_VectorcallMethod(hold_name, args, 2, NULL);
    Py_DECREF(rest);
    if (r != NULL) {
        Py_DECREF(r);
        r = PyObject_CallMethodNoArgs(self->raw, release_name);
    }
    if (r == NULL)
        goto failed;
    Py_DECREF(r);
    *out = PyLong_FromSsize_t(size);
    return 1;

failed:
    *out = NULL;
    return 1;
}

static PyObject *
held_write_builtin(PyObject *writer, PyObject *b)
{
    PyObject *args[2] = {writer, b};
    return PyObject_Vectorcall(io_write, args, 2, NULL);
}

/* FileIO._hold(b), in C; the caller holds a reference to b (a bytes object). */
static PyObject *
held_write_hold(HeldWrite *self, PyObject *b)
{
    PyObject *args[2] = {self->raw, b};
    PyObject *flag = PyObject_GetAttr(self->raw, closed_flag_name);
    if (flag == NULL)
        return NULL;
    int closed = PyObject_IsTrue(flag);
    Py_DECREF(flag);
    if (closed < 0)
        return NULL;
    PyObject *held = PyObject_GetAttr(self->raw, held_name);
    if (held == NULL)
        return NULL;
    Py_DECREF(held); /* (compared by identity only; self->held keeps ours alive) */
    if (closed || held != self->held)
        goto python_hold;
    int locked = try_acquire(self->acquire);
    if (locked < 0)
        return NULL;
    if (!locked)
        goto python_hold;

    PyObject *res = NULL, *chunks = NULL, *grown = NULL, *nbytes = NULL, *total = NULL;
    chunks = PyObject_GetAttr(self->held, chunks_name);
    if (chunks == NULL || !PyList_CheckExact(chunks)) {
        if (chunks != NULL)
            PyErr_SetString(PyExc_TypeError, "held chunks must be a list");
        goto unlock;
    }
    Py_ssize_t n = PyList_GET_SIZE(chunks);
    Py_ssize_t size = PyBytes_GET_SIZE(b);
    if (n == 0 && self->direct) {
        if (held_write_direct(self, b, size, &res))
            goto unlock;
    }
    if (n == 0) {
        off_t pos = lseek(self->fd, 0, SEEK_CUR);
        if (pos < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto unlock;
        }
        PyObject *at = PyLong_FromLongLong((long long)pos);
        if (at == NULL || PyObject_SetAttr(self->held, pos_name, at) < 0) {
            Py_XDECREF(at);
            goto unlock;
        }
        Py_DECREF(at);
    }
    nbytes = PyObject_GetAttr(self->held, nbytes_name);
    if (nbytes == NULL)
        goto unlock;
    Py_ssize_t held_bytes = PyLong_AsSsize_t(nbytes);
    if (held_bytes == -1 && PyErr_Occurred())
        goto unlock;
    grown = PyList_New(n + 1);
    total = PyLong_FromSsize_t(held_bytes + size);
    if (grown == NULL || total == NULL)
        goto unlock;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(chunks, i);
        Py_INCREF(item);
        PyList_SET_ITEM(grown, i, item);
    }
    Py_INCREF(b);
    PyList_SET_ITEM(grown, n, b);
    /* the two stores with no Python code between them (as FileIO._hold's) */
    if (PyObject_SetAttr(self->held, chunks_name, grown) < 0)
        goto unlock;
    if (PyObject_SetAttr(self->held, nbytes_name, total) < 0)
        goto unlock;
    if (held_bytes + size >= self->limit) {
        PyObject *r = PyObject_CallMethodNoArgs(self->raw, release_name);
        if (r == NULL)
            goto unlock;
        Py_DECREF(r);
    }
    res = PyLong_FromSsize_t(size);
unlock:
    Py_XDECREF(chunks);
    Py_XDECREF(grown);
    Py_XDECREF(nbytes);
    Py_XDECREF(total);
    if (release_keeping_error(self->release) < 0) {
        Py_XDECREF(res);
        return NULL;
    }
    return res;

python_hold:
    return PyObject_VectorcallMethod(hold_name, args, 2, NULL);
}

static PyObject *
held_write_call(HeldWrite *self, PyObject *b)
{
    PyObject *writer = PyWeakref_GetObject(self->writer_ref);
    if (writer == NULL)
        return NULL;
    if (writer == Py_None) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on closed file.");
        return NULL;
    }
    Py_INCREF(writer);
    Py_INCREF(b);
    PyObject *res;
    if (!PyBytes_CheckExact(b) || PyBytes_GET_SIZE(b) < self->hold_min) {
        res = held_write_builtin(writer, b);
    } else {
        PyObject *flushed = PyObject_CallOneArg(io_flush, writer);
        if (flushed != NULL) {
            Py_DECREF(flushed);
            res = held_write_hold(self, b);
        } else if (PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear(); /* closed or detached: the built-in's error, in its words */
            res = held_write_builtin(writer, b);
        } else {
            res = NULL;
        }
    }
    Py_DECREF(b);
    Py_DECREF(writer);
    return res;
}

static PyObject *
held_write_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (check_one_arg("write", nargsf, kwnames) < 0)
        return NULL;
    return held_write_call((HeldWrite *)callable, args[0]);
}

static int
held_write_init(HeldWrite *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"writer", "raw", "held", "fd", "hold_min", "backend", "tracker", "max_count", NULL};
    PyObject *writer, *raw, *held, *backend = Py_None, *tracker = Py_None;
    int fd;
    Py_ssize_t hold_min, max_count = 0;
    long generation;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOin|OOn:HeldWrite", kwlist, &writer, &raw, &held, &fd,
                                     &hold_min, &backend, &tracker, &max_count))
        return -1;
    if (fd < 0 || hold_min < 1) {
        PyErr_SetString(PyExc_ValueError, "HeldWrite needs a descriptor and a positive hold_min");
        return -1;
    }
    int direct = backend != Py_None;
    if (direct && (tracker == Py_None || max_count < 1)) {
        PyErr_SetString(PyExc_ValueError, "HeldWrite's direct writes need a tracker and a positive max_count");
        return -1;
    }
    if (current_generation(&generation) < 0)
        return -1;
    PyObject *entered = NULL, *left = NULL;
    if (direct) {
        entered = PyObject_GetAttrString(tracker, "_entered");
        left = entered ? PyObject_GetAttrString(tracker, "_left") : NULL;
        if (left == NULL || !PyIter_Check(entered) || !PyIter_Check(left)) {
            if (left != NULL)
                PyErr_SetString(PyExc_TypeError, "tracker counts must be iterators");
            Py_XDECREF(entered);
            Py_XDECREF(left);
            return -1;
        }
    }
    PyObject *lock = PyObject_GetAttrString(held, "lock");
    if (lock == NULL)
        return -1;
    PyObject *acquire = PyObject_GetAttrString(lock, "acquire");
    PyObject *release = acquire ? PyObject_GetAttrString(lock, "release") : NULL;
    Py_DECREF(lock);
    PyObject *limit = release ? PyObject_GetAttrString(held, "limit") : NULL;
    Py_ssize_t limit_n = limit ? PyLong_AsSsize_t(limit) : -1;
    Py_XDECREF(limit);
    PyObject *writer_ref = (limit_n == -1 && PyErr_Occurred()) || release == NULL ? NULL
                                                                                   : PyWeakref_NewRef(writer, NULL);
    if (writer_ref == NULL) {
        Py_XDECREF(acquire);
        Py_XDECREF(release);
        Py_XDECREF(entered);
        Py_XDECREF(left);
        return -1;
    }
    if (direct) {
        Py_INCREF(backend);
        Py_INCREF(tracker);
    }
    Py_XSETREF(self->backend, direct ? backend : NULL);
    Py_XSETREF(self->tracker, direct ? tracker : NULL);
    Py_XSETREF(self->entered, entered);
    Py_XSETREF(self->left, left);
    self->direct = direct;
    self->generation = generation;
    self->max_count = max_count;
    Py_XSETREF(self->writer_ref, writer_ref);
    Py_INCREF(raw);
    Py_XSETREF(self->raw, raw);
    Py_INCREF(held);
    Py_XSETREF(self->held, held);
    Py_XSETREF(self->acquire, acquire);
    Py_XSETREF(self->release, release);
    self->fd = fd;
    self->hold_min = hold_min;
    self->limit = limit_n;
    self->vectorcall = held_write_vectorcall;
    return 0;
}

static PyObject *
held_write_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    HeldWrite *self = (HeldWrite *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->fd = -1;
        self->hold_min = PY_SSIZE_T_MAX; /* not initialised: every call is the built-in's write */
        self->vectorcall = held_write_vectorcall;
    }
    return (PyObject *)self;
}

static int
held_write_traverse(HeldWrite *self, visitproc visit, void *arg)
{
    Py_VISIT(self->writer_ref);
    Py_VISIT(self->raw);
    Py_VISIT(self->held);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->backend);
    Py_VISIT(self->tracker);
    Py_VISIT(self->entered);
    Py_VISIT(self->left);
    return 0;
}

static int
held_write_clear(HeldWrite *self)
{
    self->direct = 0;
    Py_CLEAR(self->writer_ref);
    Py_CLEAR(self->raw);
    Py_CLEAR(self->held);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->backend);
    Py_CLEAR(self->tracker);
    Py_CLEAR(self->entered);
    Py_CLEAR(self->left);
    return 0;
}

static void
held_write_dealloc(HeldWrite *self)
{
    PyObject_GC_UnTrack(self);
    held_write_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
held_write_get_direct_writes(HeldWrite *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->direct_writes);
}

static PyObject *
held_write_get_direct(HeldWrite *self, void *Py_UNUSED(closure))
{
    long generation;
    if (current_generation(&generation) < 0)
        return NULL;
    return PyBool_FromLong(self->direct && self->generation == generation);
}

static PyGetSetDef held_write_getset[] = {
    {"direct_writes", (getter)held_write_get_direct_writes, NULL,
     "How many chunks were written here, with no Python step (a count for tests and tools).", NULL},
    {"direct", (getter)held_write_get_direct, NULL,
     "True while a chunk that would be written at once may be written here.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject HeldWriteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "uringstack.fileobj._fastio.HeldWrite",
    .tp_doc = PyDoc_STR(
        "HeldWrite(writer, raw, held, fd, hold_min, backend=None, tracker=None, max_count=0): write(b) "
        "of a write-only uringstack.open() file that keeps large bytes objects for one gathered write "
        "in C, and writes a chunk that would be written at once itself where a backend is given "
        "(see the module's source)."),
    .tp_basicsize = sizeof(HeldWrite),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = held_write_new,
    .tp_init = (initproc)held_write_init,
    .tp_dealloc = (destructor)held_write_dealloc,
    .tp_traverse = (traverseproc)held_write_traverse,
    .tp_clear = (inquiry)held_write_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(HeldWrite, vectorcall),
    .tp_getset = held_write_getset,
};

static struct PyModuleDef fastio_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "uringstack.fileobj._fastio",
    .m_doc = "The per-chunk steps of uringstack's buffered file objects in C: CachedReadInto, HeldWrite.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fastio(void)
{
    if (PyType_Ready(&CachedReadIntoType) < 0 || PyType_Ready(&HeldWriteType) < 0)
        return NULL;
    PyObject *io = PyImport_ImportModule("io");
    if (io == NULL)
        return NULL;
    PyObject *bw = PyObject_GetAttrString(io, "BufferedWriter");
    Py_DECREF(io);
    if (bw == NULL)
        return NULL;
    io_write = PyObject_GetAttrString(bw, "write");
    io_flush = io_write ? PyObject_GetAttrString(bw, "flush") : NULL;
    Py_DECREF(bw);
    if (io_flush == NULL)
        return NULL;
    chunks_name = PyUnicode_InternFromString("chunks");
    nbytes_name = PyUnicode_InternFromString("nbytes");
    pos_name = PyUnicode_InternFromString("pos");
    held_name = PyUnicode_InternFromString("_held");
    closed_flag_name = PyUnicode_InternFromString("_closed_flag");
    hold_name = PyUnicode_InternFromString("_hold");
    release_name = PyUnicode_InternFromString("_release");
    inline_writes_name = PyUnicode_InternFromString("_inline_writes");
    writes_inline_name = PyUnicode_InternFromString("writes_inline");
    backend_closed_name = PyUnicode_InternFromString("closed");
    if (!inline_writes_name || !writes_inline_name || !backend_closed_name)
        return NULL;
    if (!chunks_name || !nbytes_name || !pos_name || !held_name || !closed_flag_name || !hold_name ||
        !release_name)
        return NULL;
    closed_name = PyUnicode_InternFromString("_closed");
    reads_cached_name = PyUnicode_InternFromString("_reads_cached_inline");
    hook_name = PyUnicode_InternFromString("completion_hook");
    fallback_name = PyUnicode_InternFromString("_readinto_fallback");
    if (closed_name == NULL || reads_cached_name == NULL || hook_name == NULL || fallback_name == NULL)
        return NULL;
    forking_module = PyImport_ImportModule("uringstack.ring.forking");
    generation_name = PyUnicode_InternFromString("_generation");
    if (forking_module == NULL || generation_name == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&fastio_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CachedReadIntoType);
    if (PyModule_AddObject(m, "CachedReadInto", (PyObject *)&CachedReadIntoType) < 0) {
        Py_DECREF(&CachedReadIntoType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&HeldWriteType);
    if (PyModule_AddObject(m, "HeldWrite", (PyObject *)&HeldWriteType) < 0) {
        Py_DECREF(&HeldWriteType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
