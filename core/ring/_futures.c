/* uringstack.ring._futures: resolving an asyncio future from another thread, in C.
 *
 * A thread that ends an operation wakes its awaiting task with
 * loop.call_soon_threadsafe(callback, fut).  Between that call and the
 * callback's run on the loop's thread the task can be cancelled (a timeout,
 * a TaskGroup's sibling failing), which cancels the future; a plain
 * ``fut.set_result`` then raises InvalidStateError, which the loop logs as
 * "Exception in callback Future.set_result(None)", an error a user cannot act
 * on.  The check must not be a Python function either: a signal handler that
 * raises (Ctrl-C) runs at a Python frame's first instruction, before the
 * check, and the await would be left pending for good.  Here the check and the
 * set run with no Python frame between them, so neither can happen.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *done_name, *set_result_name;

/* set_result_unless_done(fut, value): fut.set_result(value) unless fut is done already. */
static PyObject *
set_result_unless_done(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "set_result_unless_done() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *done = PyObject_CallMethodNoArgs(args[0], done_name);
    if (done == NULL)
        return NULL;
    int is_done = PyObject_IsTrue(done);
    Py_DECREF(done);
    if (is_done < 0)
        return NULL;
    if (is_done)
        Py_RETURN_FALSE;
    PyObject *r = PyObject_CallMethodOneArg(args[0], set_result_name, args[1]);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_TRUE;
}

static PyMethodDef futures_methods[] = {
    {"set_result_unless_done", (PyCFunction)(void (*)(void))set_result_unless_done, METH_FASTCALL,
     "set_result_unless_done(fut, value, /)\n--\n\n"
     "``fut.set_result(value)`` unless *fut* is done (cancelled with its task); True if set.\n"
     "No Python frame runs between the check and the set."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef futures_module = {
    PyModuleDef_HEAD_INIT,
    "uringstack.ring._futures",
    "Resolving an asyncio future from another thread's wake-up, in C.",
    -1,
    futures_methods,
};

PyMODINIT_FUNC
PyInit__futures(void)
{
    done_name = PyUnicode_InternFromString("done");
    set_result_name = PyUnicode_InternFromString("set_result");
    if (done_name == NULL || set_result_name == NULL)
        return NULL;
    return PyModule_Create(&futures_module);
}
