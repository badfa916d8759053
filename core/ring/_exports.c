/* uringstack.ring._exports: a memoryview's buffer pinned so that the garbage
 * collector cannot crash the interpreter over it.
 *
 * CPython up to 3.11 (gh-77894, fixed in 3.12.7 and 3.13) clears a memoryview
 * found in a garbage reference cycle even while its buffer is exported: the
 * clear fails ("memoryview has 1 exported buffer") but drops the view's
 * managed buffer anyway, and the export's later release frees the view through
 * that NULL pointer: a segfault.  cffi's ffi.from_buffer pin of a memoryview
 * is such an export, and the collector sees the pin's reference to the view
 * (cffi traverses it), so a pin and its view in one cycle (a traceback's
 * frames holding both, kept by an exception caught after a Ctrl-C or an I/O
 * error) crash the next collection.
 *
 * An Export takes the view's buffer itself and re-exports the same memory; it
 * is not tracked by the collector, so nothing it holds is ever found
 * unreachable through it: the view stays alive, and uncleared, for as long as
 * the Export (and so the pin made from it) lives.  It holds no reference back,
 * so it cannot keep a cycle alive.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyObject_HEAD
    Py_buffer view;
} ExportObject;

static PyObject *
export_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"obj", "writable", NULL};
    PyObject *obj;
    int writable = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|p:Export", kwlist, &obj, &writable))
        return NULL;
    ExportObject *self = (ExportObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    /* The flags cffi's from_buffer asks with: the same errors (a read-only
     * buffer asked writable, a non-contiguous one) as pinning the view itself. */
    if (PyObject_GetBuffer(obj, &self->view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) {
        self->view.obj = NULL;
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
export_dealloc(ExportObject *self)
{
    if (self->view.obj != NULL)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
export_getbuffer(ExportObject *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, self->view.buf, self->view.len, self->view.readonly, flags);
}

static PyBufferProcs export_as_buffer = {
    (getbufferproc)export_getbuffer,
    NULL,
};

static PyTypeObject ExportType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "uringstack.ring._exports.Export",
    .tp_basicsize = sizeof(ExportObject),
    .tp_dealloc = (destructor)export_dealloc,
    .tp_as_buffer = &export_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT, /* not Py_TPFLAGS_HAVE_GC: the point of the type */
    .tp_doc = "Export(obj, writable=False)\n--\n\n"
              "*obj*'s buffer (asked writable if *writable*), exported again as plain bytes by an\n"
              "object the garbage collector does not track.",
    .tp_new = export_new,
};

static struct PyModuleDef exports_module = {
    PyModuleDef_HEAD_INIT,
    "uringstack.ring._exports",
    "A buffer export the garbage collector cannot clear under a pin (CPython gh-77894).",
    -1,
    NULL,
};

PyMODINIT_FUNC
PyInit__exports(void)
{
    if (PyType_Ready(&ExportType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&exports_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ExportType);
    if (PyModule_AddObject(m, "Export", (PyObject *)&ExportType) < 0) {
        Py_DECREF(&ExportType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
