/* uringstack's C hot path: prepare, submit and reap whole batches.
 *
 * Python hands over one batch as parallel arrays (opcodes, fds, addresses,
 * lengths, offsets, ...) and gets results written back by index, so the
 * interpreter touches a batch, never a single SQE.  cffi releases the GIL
 * around every call into this file.
 *
 * user_data = (slot << 32) | index: the slot identifies the batch (Python
 * keeps the buffers of that batch alive until the slot's remaining count
 * reaches zero), the index is the op inside the batch.
 *
 * liburing returns -errno; errno itself is never read after its calls. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sched.h>
#include <liburing.h>

#define US_MAX_SLOTS 4096
#define US_CMD_BYTES 80     /* bytes of command an SQE128 carries in sqe->cmd */
#define US_REAP_CHUNK 256
#define US_CQ_RESERVE 2     /* CQ entries kept free of tracked ops (see cq_room) */
#define US_REFILL_SUBMIT 2  /* ops queued per submission while a batch refills (submit_range) */

#define US_OP_NOP IORING_OP_NOP
#define US_OP_READV IORING_OP_READV
#define US_OP_WRITEV IORING_OP_WRITEV
#define US_OP_FSYNC IORING_OP_FSYNC
#define US_OP_READ_FIXED IORING_OP_READ_FIXED
#define US_OP_WRITE_FIXED IORING_OP_WRITE_FIXED
#define US_OP_ASYNC_CANCEL IORING_OP_ASYNC_CANCEL
#define US_OP_READ IORING_OP_READ
#define US_OP_WRITE IORING_OP_WRITE
#define US_OP_URING_CMD IORING_OP_URING_CMD
#define US_OP_LAST IORING_OP_LAST

#ifndef IORING_ASYNC_CANCEL_ANY
#define IORING_ASYNC_CANCEL_ANY (1U << 2)
#endif
#ifndef IOSQE_CQE_SKIP_SUCCESS
#define IOSQE_CQE_SKIP_SUCCESS (1U << 6)
#endif
/* SQE flags refused: CQE_SKIP_SUCCESS posts no CQE for an op that succeeds, so the
 * bookkeeping would wait for a completion that never comes, and the op's buffers
 * would be kept (and close() would time out) for nothing. */
#define US_REFUSED_SQE_FLAGS IOSQE_CQE_SKIP_SUCCESS

struct us_batch {
    uint32_t n;
    uint32_t slot;
    const uint8_t *opcodes;
    const int32_t *fds;
    const uint64_t *addrs;
    const uint32_t *lens;
    const uint64_t *offs;
    const uint32_t *op_flags;
    const uint8_t *sqe_flags;
    const uint16_t *buf_index;
    int32_t *results;
};

struct us_counters {
    uint64_t enters;     /* io_uring_enter calls we caused (predicted as liburing decides) */
    uint64_t submitted;  /* SQEs handed to the kernel */
    uint64_t reaped;     /* CQEs consumed */
    uint64_t stray;      /* CQEs whose slot was not in flight (e.g. cancel results) */
    uint64_t spins;      /* empty CQ peeks while busy-polling */
    uint64_t short_submits; /* submissions the kernel stopped at a failing op (sq_left) */
};

#define US_HOLD_LEADER 1u

typedef struct us_state {
    int32_t *results[US_MAX_SLOTS];
    uint32_t remaining[US_MAX_SLOTS];
    uint32_t unqueued[US_MAX_SLOTS];  /* the last ops of the slot's batch left unqueued for want of CQ room */
    /* Slots whose every op completed, for Python to collect (Ring._collect_done), which
     * resets done_n only once it handled every slot listed, and frees their slots only
     * then: a slot is listed when its remaining count reaches 0, and it cannot be counted
     * again before it is freed, so each slot is listed at most once and US_MAX_SLOTS
     * entries always suffice (drain still refuses to go past them).  Entries are only
     * appended (us_rw_one takes back its own slot, appended within its call). */
    uint16_t done[US_MAX_SLOTS];
    uint32_t done_n;
    uint32_t inflight;      /* tracked SQEs queued or submitted whose CQE is not reaped */
    uint32_t spin_us;       /* busy-poll the CQ this long before sleeping in the kernel */
    uint32_t room_ms;       /* next_sqe waits at most this long for CQ room (0: not at all) */
    /* US_HOLD_LEADER, set by Python (Ring._lead_locked) while a thread waits in the
     * kernel without the ring's lock (us_wait_cq) and alone drains the CQ when it wakes:
     * meanwhile nothing else drains (a CQE drained behind its back would leave it asleep
     * until its tick ends), and every wait below returns -EALREADY at once instead of
     * blocking with the lock held (the caller waits for the leader's drain instead). */
    uint32_t hold;
    /* Most tracked ops in flight (Ring.cq_cap: the CQ's entries less US_CQ_RESERVE, or the
     * ring's max_in_flight below that); 0 until Python sets it: the CQ's bound alone. */
    uint32_t cap;
    /* Set while a submission refills a batch larger than the room it found, once ops in
     * the kernel hold that room (next_sqe or room_for_chain found none after submitting
     * and reaping: the ops did not complete inside their submission, as page-cache hits
     * do): each op queued from then on is submitted at once (US_REFILL_SUBMIT at a time),
     * as a completion frees its place.  Ops that complete inline keep being submitted a
     * whole room at a time: one io_uring_enter per CQ's worth, not per pair. */
    uint32_t refilling;
    struct us_counters c;
} us_state_t;

us_state_t *us_state_new(void)
{
    return calloc(1, sizeof(us_state_t));
}

void us_state_free(us_state_t *st) { free(st); }
struct us_counters *us_state_counters(us_state_t *st) { return &st->c; }
void us_state_set_spin(us_state_t *st, uint32_t spin_us) { st->spin_us = spin_us; }
void us_state_set_cap(us_state_t *st, uint32_t cap) { st->cap = cap; }
uint32_t us_inflight(const us_state_t *st) { return st->inflight; }

uint32_t us_slot_remaining(const us_state_t *st, uint32_t slot)
{
    return slot < US_MAX_SLOTS ? st->remaining[slot] : 0;
}

static int is_sqpoll(const struct io_uring *ring)
{
    return (ring->flags & IORING_SETUP_SQPOLL) != 0;
}

/* Does liburing's io_uring_submit() enter the kernel?  Mirrors its own
 * decision so that the counter matches what strace would show. */
static int submit_needs_enter(const struct io_uring *ring)
{
    if (!is_sqpoll(ring))
        return 1;
    return (IO_URING_READ_ONCE(*ring->sq.kflags) & IORING_SQ_NEED_WAKEUP) != 0;
}

/* SQEs a submission left in the SQ: the kernel stops consuming at an op that fails
 * while it is being set up (an unknown fsync flag; on 5.10 also a bad descriptor or
 * a write on a read-only one) and returns the count it took, the failed op
 * included, unless the ring has IORING_SETUP_SUBMIT_ALL (5.18).  The rest stays
 * queued until the next io_uring_enter that submits, which a wait (GETEVENTS only)
 * or an eventfd never is: their completions would never come.  The kernels this
 * project tests (Debian's 5.10, which behaves as the 5.15 code here, 6.1, 6.12)
 * stop only at the end of a link chain (its ops after the failed one fail with
 * it), so what is left starts a new chain and is simply submitted.  An SQPOLL
 * thread goes on by itself. */
static unsigned sq_left(const struct io_uring *ring)
{
    if (is_sqpoll(ring))
        return 0;
    return ring->sq.sqe_tail - io_uring_smp_load_acquire(ring->sq.khead);
}

/* Submit what is queued, without waiting, until the kernel took all of it (see
 * sq_left); the count submitted. */
static int submit_pending(struct io_uring *ring, us_state_t *st)
{
    int total = 0;
    for (;;) {
        int enter = submit_needs_enter(ring);
        int ret = io_uring_submit(ring);
        if (ret < 0)
            return ret;  /* what is still queued: the caller unqueues it or tries again */
        if (enter)
            st->c.enters++;
        st->c.submitted += (uint64_t)ret;
        total += ret;
        if (!ret || !sq_left(ring))
            return total;
        st->c.short_submits++;
    }
}

/* Submit what is queued and, in the same io_uring_enter, wait for wait_nr
 * completions but at most timeout_ms: a hung op never blocks a submission
 * (the caller's bounded wait, which checks for lost completions, takes over).
 * One syscall, as io_uring_submit_and_wait, but only with IORING_FEAT_EXT_ARG
 * (5.11+): without it liburing would queue a timeout SQE of its own, so there
 * this only submits and leaves the waiting to the caller.  What liburing's
 * timed call returns differs between versions (a count, 0, or -ETIME with
 * SQEs submitted), so the count submitted is read from the SQ head the kernel
 * advanced: exact, since only this thread's syscall moves it on a non-SQPOLL
 * ring (the only kind that waits here). */
static int submit_waits(const struct io_uring *ring)
{
    return !(ring->flags & IORING_SETUP_IOPOLL) && (ring->features & IORING_FEAT_EXT_ARG) && !is_sqpoll(ring);
}

static int submit_wait_for(struct io_uring *ring, us_state_t *st, unsigned wait_nr, uint32_t timeout_ms)
{
    if (st->hold)
        return submit_pending(ring, st);  /* the wait happens without the ring's lock */
    /* IOPOLL: the kernel would spin unbounded on min_complete (iopoll_wait_until),
     * and it does not poll at all while the CQ holds a CQE (io_iopoll_check), so
     * waiting here for more than the first would poll out the whole tick.  The
     * submit itself enters with GETEVENTS (one poll pass); the caller's bounded
     * wait, which drains between passes, does the rest. */
    if (!submit_waits(ring))
        return submit_pending(ring, st);
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = { .tv_sec = timeout_ms / 1000, .tv_nsec = (long long)(timeout_ms % 1000) * 1000000 };
    unsigned head = IO_URING_READ_ONCE(*ring->sq.khead);
    int ret = io_uring_submit_and_wait_timeout(ring, &cqe, wait_nr, &ts, NULL);
    unsigned submitted = IO_URING_READ_ONCE(*ring->sq.khead) - head;
    st->c.enters++;
    if (!submitted && ret < 0 && ret != -ETIME)
        return ret;
    st->c.submitted += submitted;
    if (submitted && sq_left(ring)) {
        /* the kernel stopped at a failing op and did not wait: the rest goes now
         * (the caller's bounded wait does the waiting) */
        st->c.short_submits++;
        int more = submit_pending(ring, st);
        if (more < 0)
            return more;
        submitted += (unsigned)more;
    }
    return (int)submitted;
}

static unsigned drain(struct io_uring *ring, us_state_t *st)
{
    struct io_uring_cqe *cqes[US_REAP_CHUNK];
    unsigned total = 0;
    if (st->hold & US_HOLD_LEADER)
        return 0;  /* the thread waiting in the kernel drains when it wakes */
    for (;;) {
        unsigned got = io_uring_peek_batch_cqe(ring, cqes, US_REAP_CHUNK);
        if (!got)
            break;
        for (unsigned i = 0; i < got; i++) {
            uint64_t ud = cqes[i]->user_data;
            uint32_t slot = (uint32_t)(ud >> 32), idx = (uint32_t)ud;
            if (slot < US_MAX_SLOTS && st->remaining[slot] && st->results[slot]) {
                if (__builtin_expect(st->remaining[slot] == 1 && st->done_n >= US_MAX_SLOTS, 0)) {
                    /* The done list is full (cannot happen: see done_n): leave this CQE
                     * and those after it in the CQ rather than write past the list. */
                    io_uring_cq_advance(ring, i);
                    st->c.reaped += total + i;
                    return total + i;
                }
                st->results[slot][idx] = cqes[i]->res;
                if (--st->remaining[slot] == 0) {
                    st->results[slot] = NULL;
                    st->done[st->done_n++] = (uint16_t)slot;
                }
                st->inflight--;
            } else {
                st->c.stray++;
            }
        }
        io_uring_cq_advance(ring, got);
        total += got;
    }
    st->c.reaped += total;
    return total;
}

/* After a refused submission (an error, not EAGAIN/EBUSY/EINTR): take back the SQEs
 * liburing published to the SQ tail that the kernel did not consume, so no later
 * enter submits them behind the caller's back; returns how many (the newest ones
 * queued).  Only without SQPOLL, where nothing but this thread's enter consumes
 * the SQ (on SQPOLL rings they stay queued and counted in flight, as before). */
static unsigned unqueue_unsubmitted(struct io_uring *ring)
{
    if (is_sqpoll(ring))
        return 0;
    unsigned head = io_uring_smp_load_acquire(ring->sq.khead);
    unsigned k = ring->sq.sqe_tail - head;
    ring->sq.sqe_tail = ring->sq.sqe_head = head;
    io_uring_smp_store_release(ring->sq.ktail, head);
    return k;
}

static uint64_t now_ns(void);
static int wait_cqe_until(struct io_uring *ring, us_state_t *st, uint64_t deadline);

/* Ops that may still post a CQE: every SQE ever prepared (sq.sqe_tail) that is
 * queued, held by the kernel or has its CQE in the CQ, i.e. not yet consumed
 * (cq.khead) or dropped on overflow (cq.koverflow).  Counts SQEs nobody tracks
 * in flight too (cancels), which occupy the CQ all the same.  Only the thread
 * holding the ring's lock prepares SQEs and consumes CQEs, so this only shrinks
 * between its calls (the kernel's posting moves the tail, not the head). */
static unsigned cq_held(const struct io_uring *ring)
{
    unsigned consumed = io_uring_smp_load_acquire(ring->cq.khead);
    unsigned dropped = ring->cq.koverflow ? IO_URING_READ_ONCE(*ring->cq.koverflow) : 0;
    return ring->sq.sqe_tail - consumed - dropped;
}

/* CQ room: ops that may be added in flight before the CQ could be asked to hold
 * more CQEs than it has entries (the kernel would park the rest on its overflow
 * list, an allocation that can fail and drop the CQE: a lost completion).
 * US_CQ_RESERVE entries stay free for the SQEs the ring adds on its own: the
 * cancel of us_cancel_all, whose CQE comes with the cancelled ops' ones, and
 * liburing's timeout SQE of a timed wait on kernels without IORING_FEAT_EXT_ARG.
 * A ring made with max_in_flight (st->cap) keeps fewer in flight: its queue depth. */
static unsigned ring_cap(const struct io_uring *ring, const us_state_t *st)
{
    unsigned cap = ring->cq.ring_entries > US_CQ_RESERVE ? ring->cq.ring_entries - US_CQ_RESERVE : 1;
    return st->cap && st->cap < cap ? st->cap : cap;
}

static unsigned cq_room(const struct io_uring *ring, const us_state_t *st)
{
    unsigned cap = ring_cap(ring, st);
    unsigned held = cq_held(ring);
    return held < cap ? cap - held : 0;
}

uint32_t us_cq_room(const struct io_uring *ring, const us_state_t *st) { return cq_room(ring, st); }

/* The next free SQE, submitting (and reaping, so the CQ never overflows) what is
 * queued while the SQ is full; NULL with *err set on a submission error, or with
 * -EBUSY when the CQ has no room for one more op in flight (cq_room) even after
 * submitting what is queued, reaping what completed and waiting up to room_ms
 * (one Ring.wait_tick) for more: the caller returns to Python, whose bounded
 * wait (us_wait_room_for, checked for lost completions and the deadline) makes
 * room and calls again.  The reap follows
 * every submission: ops that complete inline post their CQEs inside it
 * (tests/ring/test_audit_cq_overflow.py, tests/ring/test_cq_cap.py). */
static struct io_uring_sqe *next_sqe(struct io_uring *ring, us_state_t *st, int *err)
{
    /* First from the bookkeeping's own count (no read of the kernel's shared ring
     * memory per op): every tracked op queued or in the kernel is in inflight, and
     * the only untracked SQEs (a cancel on close, liburing's timeout) fit in the
     * reserve; near the cap the exact count decides. */
    if (__builtin_expect(st->inflight + 1 >= ring_cap(ring, st), 0) && !cq_room(ring, st)) {
        int ret = submit_pending(ring, st);
        if (ret < 0 && ret != -EAGAIN && ret != -EBUSY && ret != -EINTR) {
            *err = ret;
            return NULL;
        }
        drain(ring, st);
        if (!cq_room(ring, st)) {
            st->refilling = 1;  /* the kernel holds the ops (they did not complete inline) */
            if (st->room_ms) {
                /* wait here for completions (one tick at most, the caller's bounded wait
                 * checks for lost ones and deadlines past it): no trip back to Python
                 * per CQ's worth of a large batch */
                uint64_t deadline = now_ns() + (uint64_t)st->room_ms * 1000000ull;
                while (!cq_room(ring, st) && cq_held(ring)) {
                    int w = wait_cqe_until(ring, st, deadline);
                    drain(ring, st);
                    if (w < 0)
                        break;  /* -ETIME, -EINTR (back to Python for its handlers), an error */
                }
            }
        }
        if (!cq_room(ring, st)) {
            *err = -EBUSY;
            return NULL;
        }
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    while (!sqe) {
        int ret = submit_pending(ring, st);
        if (ret < 0 && ret != -EAGAIN && ret != -EBUSY && ret != -EINTR) {
            *err = ret;
            return NULL;
        }
        drain(ring, st);
        sqe = io_uring_get_sqe(ring);
        if (!sqe && is_sqpoll(ring))
            sched_yield();  /* SQ thread has not consumed the ring yet */
    }
    return sqe;
}

#define US_LINKS (IOSQE_IO_LINK | IOSQE_IO_HARDLINK)

/* The number of ops of the link chain that op i of the batch starts (1: no chain).
 * The kernel ends a chain at the end of each submission: a chain whose SQEs went to
 * the kernel in two io_uring_enter calls is two chains, the second (a Flush after
 * its Writes, an fsync after its write) free to run before the first completed. */
static uint32_t chain_at(const struct us_batch *b, uint32_t i)
{
    if (!b->sqe_flags || (i > 0 && (b->sqe_flags[i - 1] & US_LINKS)))
        return 1;  /* no chain, or i is inside one (its head made room for it all) */
    uint32_t k = i;
    while (k < b->n && (b->sqe_flags[k] & US_LINKS))
        k++;
    return (k < b->n ? k + 1 : k) - i;
}

/* Room for a whole link chain of *len* ops before its first is queued: free SQEs and
 * CQ room (cq_room) for all of them, submitting and reaping what is queued first, and
 * waiting up to room_ms for completions, as next_sqe does for one op.  Then next_sqe
 * never submits in the middle of the chain.  0, -EBUSY (no CQ room yet: the caller
 * returns to Python with the chain's head the first op not queued), or an error. */
static int room_for_chain(struct io_uring *ring, us_state_t *st, uint32_t len)
{
    for (;;) {
        if (io_uring_sq_space_left(ring) >= len && cq_room(ring, st) >= len)
            return 0;
        int ret = submit_pending(ring, st);
        if (ret < 0 && ret != -EAGAIN && ret != -EBUSY && ret != -EINTR)
            return ret;
        drain(ring, st);
        if (cq_room(ring, st) < len) {
            st->refilling = 1;
            if (st->room_ms) {
                uint64_t deadline = now_ns() + (uint64_t)st->room_ms * 1000000ull;
                while (cq_room(ring, st) < len && cq_held(ring)) {
                    int w = wait_cqe_until(ring, st, deadline);
                    drain(ring, st);
                    if (w < 0)
                        break;
                }
            }
        }
        if (cq_room(ring, st) < len)
            return -EBUSY;
        if (io_uring_sq_space_left(ring) < len && is_sqpoll(ring))
            sched_yield();  /* the SQ thread has not consumed the ring yet */
    }
}

/* Submit what is queued and, with wait_nr, wait for that many completions
 * (bounded by wait_ms); retried while the kernel is busy.  -EINTR from
 * io_uring_enter means nothing was submitted (the kernel reports a partial
 * submission as a count), so trying again is right. */
static int submit_retrying(struct io_uring *ring, us_state_t *st, unsigned wait_nr, uint32_t wait_ms)
{
    for (;;) {
        int ret = wait_nr ? submit_wait_for(ring, st, wait_nr, wait_ms) : submit_pending(ring, st);
        if (ret >= 0)
            return ret;
        if (ret != -EAGAIN && ret != -EBUSY && ret != -EINTR)
            return ret;
        drain(ring, st);
    }
}

static int prep_one(struct io_uring *ring, struct io_uring_sqe *sqe, const struct us_batch *b, uint32_t i)
{
    uint8_t op = b->opcodes[i];
    int fd = b->fds[i];
    void *addr = (void *)(uintptr_t)(b->addrs ? b->addrs[i] : 0);
    uint32_t len = b->lens ? b->lens[i] : 0;
    uint64_t off = b->offs ? b->offs[i] : 0;
    uint32_t opf = b->op_flags ? b->op_flags[i] : 0;

    switch (op) {
    case IORING_OP_NOP: io_uring_prep_nop(sqe); break;
    case IORING_OP_READ: io_uring_prep_read(sqe, fd, addr, len, off); sqe->rw_flags = (int)opf; break;
    case IORING_OP_WRITE: io_uring_prep_write(sqe, fd, addr, len, off); sqe->rw_flags = (int)opf; break;
    case IORING_OP_READV: io_uring_prep_readv(sqe, fd, addr, len, off); sqe->rw_flags = (int)opf; break;
    case IORING_OP_WRITEV: io_uring_prep_writev(sqe, fd, addr, len, off); sqe->rw_flags = (int)opf; break;
    case IORING_OP_READ_FIXED:
        io_uring_prep_read_fixed(sqe, fd, addr, len, off, b->buf_index ? b->buf_index[i] : 0);
        sqe->rw_flags = (int)opf;
        break;
    case IORING_OP_WRITE_FIXED:
        io_uring_prep_write_fixed(sqe, fd, addr, len, off, b->buf_index ? b->buf_index[i] : 0);
        sqe->rw_flags = (int)opf;
        break;
    case IORING_OP_FSYNC: io_uring_prep_fsync(sqe, fd, opf); break;
    case IORING_OP_ASYNC_CANCEL:
        io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)addr, (int)opf);
        sqe->fd = fd;
        break;
    case IORING_OP_URING_CMD:
        /* liburing 2.3 has no io_uring_prep_uring_cmd: build the 128-byte
         * SQE by hand as fio's io_uring_cmd engine does. */
        if (!(ring->flags & IORING_SETUP_SQE128) || len > US_CMD_BYTES || !addr)
            return -EINVAL;
        memset(sqe, 0, 2 * sizeof(*sqe));
        sqe->opcode = IORING_OP_URING_CMD;
        sqe->fd = fd;
        sqe->cmd_op = opf;
        memcpy(sqe->cmd, addr, len);
        break;
    default:
        return -EINVAL;
    }
    io_uring_sqe_set_flags(sqe, b->sqe_flags ? b->sqe_flags[i] : 0);
    io_uring_sqe_set_data64(sqe, ((uint64_t)b->slot << 32) | i);
    return 0;
}

/* The last *k* of the *n* ops of *slot* never reached the kernel (unqueue_unsubmitted, or
 * left unqueued): stop awaiting them; their result is -ECANCELED. */
static void forget_unsubmitted(us_state_t *st, uint32_t slot, uint32_t n, uint32_t k)
{
    if (st->results[slot])
        for (uint32_t i = n - k; i < n; i++)
            st->results[slot][i] = -ECANCELED;
    st->unqueued[slot] = 0;
    st->remaining[slot] -= k;
    if (st->remaining[slot] == 0)
        st->results[slot] = NULL;
}

/* Queue every op of the batch and submit them.  When the SQ fills up mid-
 * batch the queued part is submitted and preparation continues, so a batch
 * may be larger than the ring.  wait_nr > 0 makes the final submission also
 * wait for that many completions in the same syscall, for at most wait_ms
 * (never on SQPOLL rings, where waiting in the kernel would forfeit the point
 * of the poller).
 * Returns 0 or -errno; on error nothing of the batch that was not yet
 * submitted reaches the kernel, and us_slot_remaining counts only what did.
 * Returns k > 0 when the CQ had no room for more ops in flight (cq_room) even
 * after submitting and reaping: the first n - k ops are submitted, the last k
 * are not queued but still awaited in the slot; us_batch_resume queues them
 * once the caller made room (us_wait_room_for), or us_forget_unqueued gives
 * them up. */
static int submit_range(struct io_uring *ring, us_state_t *st, const struct us_batch *b, uint32_t start,
                        uint32_t wait_nr, uint32_t wait_ms)
{
    st->unqueued[b->slot] = 0;
    st->refilling = start > 0;  /* a resumed batch waited for room (us_batch_resume) */
    for (uint32_t i = start; i < b->n; i++) {
        int err;
        uint32_t chain = chain_at(b, i);
        struct io_uring_sqe *sqe = NULL;
        if (chain > 1 && (err = room_for_chain(ring, st, chain)) < 0)
            sqe = NULL;  /* handled below as next_sqe's failure: -EBUSY before the chain's head */
        else
            sqe = next_sqe(ring, st, &err);
        if (!sqe) {
            if (err == -EBUSY) {
                st->unqueued[b->slot] = b->n - i;  /* us_batch_resume or us_forget_unqueued: never both */
                return (int)(b->n - i);  /* next_sqe submitted what was queued */
            }
            /* ops start..i-1 are queued, the last k of them never reached the kernel */
            unsigned k = unqueue_unsubmitted(ring);
            st->inflight -= k;
            forget_unsubmitted(st, b->slot, b->n, b->n - i + k);
            return err;
        }
        int ret = prep_one(ring, sqe, b, i);
        if (ret < 0) {
            /* Op i cannot be prepared.  Take back its SQE and the ops queued since
             * the last submission (liburing publishes the SQ tail only when it
             * submits, so the kernel never saw them): they are not submitted, so
             * the error needs no follow-up submission whose own failure would
             * leave them queued behind the caller's back.  Ops a full SQ already
             * submitted (a batch larger than the ring) stay in flight, awaited. */
            unsigned k = ring->sq.sqe_tail - ring->sq.sqe_head;
            if (k > i - start + 1)
                k = i - start + 1;  /* never another caller's SQEs (there are none: each call submits its own) */
            ring->sq.sqe_tail -= k;
            st->inflight -= k - 1;
            forget_unsubmitted(st, b->slot, b->n, b->n - i + (k - 1));
            return ret;
        }
        st->inflight++;  /* counted as queued: a drain inside next_sqe may reap it */
        if (st->refilling && i + 1 < b->n && io_uring_sq_ready(ring) >= US_REFILL_SUBMIT &&
            !(b->sqe_flags && (b->sqe_flags[i] & US_LINKS)))
            /* Refilling: hand the op to the device now rather than with the next ones
             * a completion frees.  One submission of many reads reaches the device only
             * when the kernel's block plug is flushed at its end, so a refill of a whole
             * burst of completions leaves the device idle meanwhile: measured on this
             * VM's virtio disk, 4 KiB O_DIRECT at 30 in flight went from 0.83x fio's
             * IOPS to 0.97-0.98x (docs/api.md, "At most Ring.cq_cap ops").  Its error,
             * if any, is the next submission's (which retries what is still queued).
             * Never after the batch's last op: the final submission below must submit
             * something, so that a signal cannot turn its wait into -EINTR (see
             * batch_submit_from). */
            submit_pending(ring, st);
    }
    /* never wait for more CQEs than the slot still awaits (the rest of a batch
     * larger than the CQ was reaped while it was queued) */
    if (wait_nr > st->remaining[b->slot])
        wait_nr = st->remaining[b->slot];
    int ret = submit_retrying(ring, st, is_sqpoll(ring) ? 0 : wait_nr, wait_ms);
    if (ret < 0) {
        unsigned k = unqueue_unsubmitted(ring);
        st->inflight -= k;
        forget_unsubmitted(st, b->slot, b->n, k);
        return ret;
    }
    return 0;
}

static int batch_valid(struct io_uring *ring, us_state_t *st, const struct us_batch *b)
{
    if (b->slot >= US_MAX_SLOTS || st->remaining[b->slot] || b->n == 0 || !b->results)
        return -EINVAL;
    for (uint32_t i = 0; i < b->n; i++) {
        uint8_t op = b->opcodes[i];
        if (op >= IORING_OP_LAST)
            return -EINVAL;
        if (op == IORING_OP_URING_CMD && !(ring->flags & IORING_SETUP_SQE128))
            return -EINVAL;
        if (b->sqe_flags && (b->sqe_flags[i] & US_REFUSED_SQE_FLAGS))
            return -EINVAL;
        /* a chain that cannot be queued whole cannot stay one chain (chain_at) */
        uint32_t chain = chain_at(b, i);
        if (chain > ring->sq.ring_entries || chain > ring_cap(ring, st))
            return -E2BIG;
    }
    return 0;
}

int us_submit_batch(struct io_uring *ring, us_state_t *st, const struct us_batch *b, uint32_t wait_nr,
                    uint32_t wait_ms)
{
    int ret = batch_valid(ring, st, b);
    if (ret < 0)
        return ret;
    st->results[b->slot] = b->results;
    st->remaining[b->slot] = b->n;
    return submit_range(ring, st, b, 0, wait_nr, wait_ms);
}

/* Give up the ops of the batch (of *n* ops) in *slot* that us_submit_batch or
 * us_batch_resume left unqueued (they returned k > 0): stop awaiting them, and
 * their result is -ECANCELED.  Returns how many: exactly those the bookkeeping
 * holds unqueued, whatever error ended the batch's submission (0 when an error
 * exit already gave them up, or none is left), so it is safe on every error
 * path and never forgets an op the kernel holds.  When nothing else of the
 * slot is awaited it is finished without a result (not put in the done list:
 * the caller, which gave the ops up, frees the slot itself). */
uint32_t us_forget_unqueued(us_state_t *st, uint32_t slot, uint32_t n)
{
    if (slot >= US_MAX_SLOTS)
        return 0;
    uint32_t k = st->unqueued[slot];
    if (!k || k > n || k > st->remaining[slot])
        return 0;
    forget_unsubmitted(st, slot, n, k);
    return k;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Wait on an IOPOLL ring until *wait_nr* CQEs are ready, or until the
 * CLOCK_MONOTONIC *deadline* in ns (0: none); -ETIME once it passed.
 *
 * On an IOPOLL ring the kernel ignores the IORING_ENTER_EXT_ARG timeout: asked
 * for min_complete > 0 it spins in io_iopoll_check (and, in blk_mq_poll, in the
 * driver's poll) until enough completions came or the scheduler wants the CPU
 * back (need_resched), so a hung polled command can keep the thread in one
 * syscall with no bound at all, and without EXT_ARG liburing's timeout SQE is
 * refused (EINVAL) on such a ring.  So every GETEVENTS enter here asks for
 * min_complete 0, which makes the kernel do one non-spinning pass over the
 * poll queues (BLK_POLL_ONESHOT), and the spinning happens between syscalls,
 * where the deadline is checked.  Each pass is counted in enters. */
static int iopoll_wait_until(struct io_uring *ring, us_state_t *st, unsigned wait_nr, uint64_t deadline)
{
    for (;;) {
        if (io_uring_cq_ready(ring) >= wait_nr)
            return 0;
        if (deadline && now_ns() >= deadline)
            return -ETIME;
        st->c.enters++;
        int ret = io_uring_get_events(ring);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
            return ret;
    }
}

/* Wait in the kernel for a CQE, until the CLOCK_MONOTONIC *deadline* in ns
 * (0: no deadline); -ETIME once it passed. */
static int wait_cqe_until(struct io_uring *ring, us_state_t *st, uint64_t deadline)
{
    struct io_uring_cqe *cqe;
    if (st->hold)
        return -EALREADY;  /* not under the ring's lock: see us_state_t.hold */
    if (ring->flags & IORING_SETUP_IOPOLL)
        return iopoll_wait_until(ring, st, 1, deadline);
    st->c.enters++;
    if (!deadline)
        return io_uring_wait_cqe(ring, &cqe);
    uint64_t now = now_ns();
    if (now >= deadline)
        return -ETIME;
    uint64_t left = deadline - now;
    struct __kernel_timespec ts = { .tv_sec = (long long)(left / 1000000000ull),
                                    .tv_nsec = (long long)(left % 1000000000ull) };
    return io_uring_wait_cqe_timeout(ring, &cqe, &ts);
}

/* Block (or busy-poll for spin_us first) until cond() holds; with timeout_ms
 * (0: unbounded) return -ETIME once that much time passed without it. */
static int wait_until_for(struct io_uring *ring, us_state_t *st, int (*cond)(us_state_t *, uint32_t), uint32_t arg,
                          uint32_t timeout_ms)
{
    drain(ring, st);
    if (cond(st, arg))
        return 0;
    if (st->hold)
        return -EALREADY;  /* not under the ring's lock: see us_state_t.hold */
    if (st->spin_us) {
        uint64_t end = now_ns() + (uint64_t)st->spin_us * 1000u;
        do {
            if (drain(ring, st) == 0)
                st->c.spins++;
            if (cond(st, arg))
                return 0;
        } while (now_ns() < end);
    }
    uint64_t deadline = timeout_ms ? now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
    while (!cond(st, arg)) {
        if (st->inflight == 0)
            return -ENOENT;   /* would wait forever */
        if (timeout_ms && now_ns() >= deadline)
            return -ETIME;
        int ret = wait_cqe_until(ring, st, timeout_ms ? deadline : 0);
        if (ret < 0 && ret != -ETIME)
            return ret;     /* -EINTR goes back to Python so signals are handled */
        drain(ring, st);
    }
    return 0;
}

static int wait_until(struct io_uring *ring, us_state_t *st, int (*cond)(us_state_t *, uint32_t), uint32_t arg)
{
    return wait_until_for(ring, st, cond, arg, 0);
}

/* Ops the bookkeeping counts in flight for which the ring can no longer
 * deliver a completion.  Every SQE ever prepared (sq.sqe_tail) either still
 * waits to be submitted, is held by the kernel, has its CQE in the CQ, or had
 * its CQE consumed (cq.khead) or dropped on overflow (cq.koverflow); only the
 * bookkeeping's drain consumes CQEs.  So if the bookkeeping waits for more
 * ops than sqe_tail - khead - dropped, the difference was consumed behind its
 * back or dropped: those completions will never come.  The uncertain
 * direction is safe: SQEs nobody counts in flight (cancels, fillers,
 * liburing's timeouts) only make the kernel's share look larger.  The caller
 * holds the ring's lock, so no drain runs concurrently. */
uint32_t us_lost_completions(struct io_uring *ring, const us_state_t *st)
{
    uint32_t consumed = io_uring_smp_load_acquire(ring->cq.khead);
    uint32_t dropped = ring->cq.koverflow ? IO_URING_READ_ONCE(*ring->cq.koverflow) : 0;
    uint32_t held = ring->sq.sqe_tail - consumed - dropped;
    return st->inflight > held ? st->inflight - held : 0;
}

static int slot_done(us_state_t *st, uint32_t slot) { return st->remaining[slot] == 0; }
static int any_done(us_state_t *st, uint32_t min_done) { return st->done_n >= min_done; }

int us_wait_slot(struct io_uring *ring, us_state_t *st, uint32_t slot)
{
    if (slot >= US_MAX_SLOTS)
        return -EINVAL;
    return wait_until(ring, st, slot_done, slot);
}

int us_wait_any(struct io_uring *ring, us_state_t *st, uint32_t min_done)
{
    return wait_until(ring, st, any_done, min_done);
}

/* The bounded forms: -ETIME after timeout_ms, so the caller can check the
 * ring (us_lost_completions, a deadline) and wait again instead of hanging. */
int us_wait_slot_for(struct io_uring *ring, us_state_t *st, uint32_t slot, uint32_t timeout_ms)
{
    if (slot >= US_MAX_SLOTS)
        return -EINVAL;
    return wait_until_for(ring, st, slot_done, slot, timeout_ms);
}

int us_wait_any_for(struct io_uring *ring, us_state_t *st, uint32_t min_done, uint32_t timeout_ms)
{
    return wait_until_for(ring, st, any_done, min_done, timeout_ms);
}

int us_reap_ready(struct io_uring *ring, us_state_t *st)
{
    return (int)drain(ring, st);
}

/* One non-blocking pass through the kernel (io_uring_enter with GETEVENTS and
 * min_complete 0), then drain.  On an IOPOLL ring this is what makes the
 * device's poll queue progress: completions never appear otherwise. */
int us_poll(struct io_uring *ring, us_state_t *st)
{
    st->c.enters++;
    int ret = io_uring_submit_and_get_events(ring);
    if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
        return ret;
    return (int)drain(ring, st);
}

/* Ask the kernel to cancel everything in flight on this ring, then wait for
 * every CQE so no buffer is still owned by the kernel when Python frees it.
 * The wait is bounded by timeout_ms (0: unbounded): a completion that never
 * comes (a lost CQE, a hung device) returns -ETIME instead of hanging, and
 * the caller keeps the buffers of what is still counted in flight. */
int us_cancel_all(struct io_uring *ring, us_state_t *st, uint32_t timeout_ms)
{
    drain(ring, st);
    if (st->inflight == 0)
        return 0;
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) {
        submit_pending(ring, st);
        sqe = io_uring_get_sqe(ring);
    }
    if (sqe) {
        io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
        io_uring_sqe_set_data64(sqe, UINT64_MAX);
        submit_pending(ring, st);
    }
    uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (st->inflight) {
        if (timeout_ms && now_ns() >= deadline)
            return -ETIME;
        int ret = wait_cqe_until(ring, st, timeout_ms ? deadline : 0);
        if (ret < 0 && ret != -EINTR && ret != -ETIME)
            return ret;
        drain(ring, st);
    }
    return 0;
}

/* One IORING_OP_ASYNC_CANCEL per op, by its user_data, for kernels without
 * IORING_ASYNC_CANCEL_ANY (before 5.19, which refuse us_cancel_all's cancel with
 * -EINVAL: nothing was cancelled and a close waited its whole timeout).  The
 * cancels are untracked (user_data UINT64_MAX, which drain() skips) and go one
 * at a time, each after a drain, so their CQEs never need more than the CQ's
 * reserve.  An op already complete answers -ENOENT: harmless.  Returns 0 or a
 * submission error. */
int us_cancel_each(struct io_uring *ring, us_state_t *st, const uint64_t *user_data, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        drain(ring, st);
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
        if (!sqe) {
            submit_pending(ring, st);
            drain(ring, st);
            sqe = io_uring_get_sqe(ring);
            if (!sqe)
                return -EBUSY;
        }
        io_uring_prep_cancel64(sqe, user_data[i], 0);
        io_uring_sqe_set_data64(sqe, UINT64_MAX);
        int ret;
        do
            ret = submit_pending(ring, st);
        while (ret == -EINTR);
        if (ret == -EAGAIN || ret == -EBUSY) {
            /* Not submitted: taken back out of the SQ, as a cancel left queued would go
             * out with a later submission, after the op may have completed and its slot
             * been reused (user_data slot<<32|i), and cancel another op. */
            unqueue_unsubmitted(ring);
            continue;
        }
        if (ret < 0)
            return ret;
    }
    drain(ring, st);
    return 0;
}

/* Test hook: consume one posted CQE without the bookkeeping seeing it, as a
 * reap loop with a bug would.  Returns 1 if a CQE was dropped, 0 if none was
 * posted.  Used only by the test that proves a lost completion fails fast. */
int us_test_drop_cqe(struct io_uring *ring)
{
    struct io_uring_cqe *cqe;
    if (io_uring_peek_cqe(ring, &cqe) != 0)
        return 0;
    io_uring_cqe_seen(ring, cqe);
    return 1;
}

/* One waited read or write (READ, WRITE, READ_FIXED or WRITE_FIXED) in one
 * call: prepare the SQE, submit it and wait for its completion in the same
 * io_uring_enter (bounded by wait_ms, as us_submit_batch's wait), reap.  The
 * op is tracked in *slot* exactly like a one-op batch of us_submit_batch
 * (results[slot] = result, remaining, inflight), so drain() routes its CQE
 * and us_lost_completions() counts it; the difference is what happens when
 * it completes here: the slot is taken back out of the done list, so the
 * caller needs no collect for it.
 *
 * Returns the number of *other* batches whose completion drain() collected
 * meanwhile (>= 0: the op completed, its result is in *result; the caller
 * collects those others) or -errno: -ETIME when the op did not complete
 * within the wait (still in flight in *slot*: the caller's bounded wait,
 * which checks for lost completions, takes over), -EINTR likewise, or a
 * submission error (us_slot_remaining tells whether the op reached the
 * kernel, as after us_submit_batch). */
int us_rw_one(struct io_uring *ring, us_state_t *st, uint32_t slot, uint8_t opcode, int32_t fd, uint8_t sqe_flags,
              void *buf, uint32_t len, uint64_t off, uint16_t buf_index, int32_t *result, uint32_t wait_ms)
{
    if (slot >= US_MAX_SLOTS || st->remaining[slot] || !result)
        return -EINVAL;
    if (opcode != IORING_OP_READ && opcode != IORING_OP_WRITE && opcode != IORING_OP_READ_FIXED &&
        opcode != IORING_OP_WRITE_FIXED)
        return -EINVAL;
    if (sqe_flags & US_REFUSED_SQE_FLAGS)
        return -EINVAL;
    int err;
    struct io_uring_sqe *sqe = next_sqe(ring, st, &err);
    if (!sqe)
        return err;
    switch (opcode) {
    case IORING_OP_READ: io_uring_prep_read(sqe, fd, buf, len, off); break;
    case IORING_OP_WRITE: io_uring_prep_write(sqe, fd, buf, len, off); break;
    case IORING_OP_READ_FIXED: io_uring_prep_read_fixed(sqe, fd, buf, len, off, buf_index); break;
    default: io_uring_prep_write_fixed(sqe, fd, buf, len, off, buf_index); break;
    }
    io_uring_sqe_set_flags(sqe, sqe_flags);
    io_uring_sqe_set_data64(sqe, (uint64_t)slot << 32);
    st->results[slot] = result;
    st->remaining[slot] = 1;
    st->inflight++;
    uint32_t done_before = st->done_n;
    int sub = submit_retrying(ring, st, is_sqpoll(ring) || st->hold ? 0 : 1, wait_ms);
    if (sub < 0) {
        if (unqueue_unsubmitted(ring)) {
            st->inflight--;
            forget_unsubmitted(st, slot, 1, 1);
        }
        return sub;
    }
    /* SQPOLL: the submission never waits.  IOPOLL: it made one poll pass (the
     * kernel ignores a wait's timeout there), so the bounded pass loop of
     * iopoll_wait_until does the waiting here, within wait_ms, in this call. */
    int ret = is_sqpoll(ring) || (ring->flags & IORING_SETUP_IOPOLL)
                  ? wait_until_for(ring, st, slot_done, slot, wait_ms)
                  : (drain(ring, st), 0);
    if (st->remaining[slot])
        return ret < 0 && ret != -EALREADY ? ret : -ETIME;
    /* completed: take it back out of the done list (drain appended it) */
    for (uint32_t i = st->done_n; i-- > done_before;) {
        if (st->done[i] == slot) {
            memmove(st->done + i, st->done + i + 1, (st->done_n - i - 1) * sizeof(uint16_t));
            st->done_n--;
            break;
        }
    }
    return (int)st->done_n;
}

/* us_rw_one with the arguments that do not change between ops read from *b*:
 * cffi converts each argument of a call (tens of ns apiece), and at QD1 that
 * conversion sits between one completion and the next submission. */
struct us_rw_bound {
    struct io_uring *ring;
    us_state_t *st;
    void *buf;
    int32_t fd;
    uint32_t len;
    uint16_t buf_index;
    uint8_t opcode;
    uint8_t sqe_flags;
};

int us_rw_one_bound(const struct us_rw_bound *b, uint32_t slot, uint64_t off, int32_t *result, uint32_t wait_ms)
{
    if (!b)
        return -EINVAL;
    return us_rw_one(b->ring, b->st, slot, b->opcode, b->fd, b->sqe_flags, b->buf, b->len, off, b->buf_index, result,
                     wait_ms);
}

/* Test hook for IOPOLL rings, where nothing is posted to the CQ until some
 * task polls: one non-blocking GETEVENTS pass (min_complete 0, so the kernel
 * polls the device once) without the bookkeeping's drain, then the same
 * consumption as us_test_drop_cqe.  Returns 1 if a CQE was dropped. */
int us_test_drop_cqe_polled(struct io_uring *ring)
{
    io_uring_get_events(ring);
    return us_test_drop_cqe(ring);
}

int64_t us_first_misaligned(const uint64_t *addrs, const uint32_t *lens, const uint64_t *offs,
                            uint32_t n, uint32_t align)
{
    uint64_t mask = align - 1;
    for (uint32_t i = 0; i < n; i++) {
        if ((addrs && (addrs[i] & mask)) || (lens && (lens[i] & mask)) || (offs && (offs[i] & mask)))
            return i;
    }
    return -1;
}

int64_t us_first_short(const int32_t *results, const uint32_t *lens, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (results[i] < 0 || (uint32_t)results[i] != lens[i])
            return i;
    }
    return -1;
}

/* --- the batch path with one call per batch (helper "threads") ------------
 * cffi releases the GIL around every call into this file, and with two
 * worker threads each release is a point where the other thread takes the
 * GIL and this one must wait (a futex sleep and a context switch) to get it
 * back.  So the batch path makes one call per batch: us_batch_start submits,
 * optionally waits (bounded), and drains the CQ into the result columns; the
 * state Python then needs (which slots finished, what is left in flight,
 * whether the CQ holds anything) is read from memory through the pointers
 * us_batch_view hands out once per ring: a plain memory read keeps the GIL.
 * Python reads and resets them only under the ring's lock, the same lock
 * every call that drains holds. */
struct us_batch_view {
    uint32_t *done_n;          /* slots in done[] Python has not acknowledged (see done_n) */
    uint16_t *done;            /* slots whose every op completed, in order */
    const uint32_t *remaining; /* per slot: ops still awaited */
    const uint32_t *inflight;  /* ops submitted whose CQE is not reaped */
    const unsigned *cq_khead;  /* CQ ring head/tail (the kernel's shared memory): */
    const unsigned *cq_ktail;  /* head != tail means a CQE waits to be drained */
    const unsigned *sq_kflags; /* & US_CQ_NEEDS_FLUSH: CQEs wait in the kernel (overflow, task work) */
    uint32_t *room_ms;         /* how long a submission may wait in C for CQ room (the first part of a wait: Ring._hold_ms) */
    uint32_t *hold;            /* us_state_t.hold: set and cleared by Python under the lock */
};

#ifndef IORING_SQ_TASKRUN
#define IORING_SQ_TASKRUN (1U << 2)
#endif
/* The SQ flags under which a drain must enter the kernel to find completions
 * (liburing's peek does: overflowed CQEs, or deferred task work to run). */
#define US_CQ_NEEDS_FLUSH (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)

void us_batch_view(struct io_uring *ring, us_state_t *st, struct us_batch_view *out)
{
    out->done_n = &st->done_n;
    out->done = st->done;
    out->remaining = st->remaining;
    out->inflight = &st->inflight;
    out->cq_khead = ring->cq.khead;
    out->cq_ktail = ring->cq.ktail;
    out->sq_kflags = ring->sq.kflags;
    out->room_ms = &st->room_ms;
    out->hold = &st->hold;
}

/* Block until the CQ holds a CQE, at most timeout_ms (-ETIME), or until a signal
 * (-EINTR): what a thread waits for without the ring's lock while it is the ring's
 * leader (US_HOLD_LEADER: nobody else drains, so a CQE posted stays until this
 * thread, back under the lock, drains it, and the wait can never sleep through its
 * own completion).  It reads the CQ indexes and enters the kernel, nothing else:
 * no SQE is queued (the timeout travels in IORING_ENTER_EXT_ARG, 5.11+, which the
 * caller checked) and no CQE consumed, so the lock's holder may submit meanwhile.
 * Busy-polls the CQ for spin_us first, as the waits under the lock do. */
int us_wait_cq(struct io_uring *ring, uint32_t spin_us, uint32_t timeout_ms)
{
    if (io_uring_cq_ready(ring))
        return 0;
    if (spin_us) {
        uint64_t end = now_ns() + (uint64_t)spin_us * 1000u;
        do {
            if (io_uring_cq_ready(ring))
                return 0;
        } while (now_ns() < end);
    }
    struct __kernel_timespec ts = { .tv_sec = timeout_ms / 1000, .tv_nsec = (long long)(timeout_ms % 1000) * 1000000 };
    struct io_uring_getevents_arg arg = { .sigmask = 0, .sigmask_sz = 0, .ts = (uint64_t)(uintptr_t)&ts };
    int ret = io_uring_enter2(ring->ring_fd, 0, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, (sigset_t *)&arg,
                              sizeof(arg));
    return ret < 0 ? ret : 0;
}

/* batch_submit_from: us_submit_batch; with wait_nr > 0 and wait_ms > 0 also wait until this
 * batch completed, for at most wait_ms in all, and drain the CQ into the
 * result columns, so the caller's wait finds the batch complete without a
 * further call.  A hung op never blocks here: the caller's bounded wait, which
 * checks for lost completions, takes over when the batch is still in flight
 * on return.  On SQPOLL rings the wait happens after the submission (as the
 * caller's wait would), never inside it.  Without a wait nothing is drained
 * (completions stay in the CQ for the next reap, as with us_submit_batch).
 * Returns us_submit_batch's error, else 0: a failed or interrupted wait is
 * left to the caller's wait, which handles it. */
/* resume: go on from op *start* of a batch already set up in its slot */
static int batch_submit_from(struct io_uring *ring, us_state_t *st, const struct us_batch *b, int resume,
                             uint32_t start, uint32_t wait_nr, uint32_t wait_ms)
{
    if (!wait_nr || !wait_ms)
        return resume ? submit_range(ring, st, b, start, 0, 0) : us_submit_batch(ring, st, b, 0, 0);
    uint64_t start_ns = now_ns();
    int ret = resume ? submit_range(ring, st, b, start, wait_nr, wait_ms) : us_submit_batch(ring, st, b, wait_nr, wait_ms);
    if (ret != 0)
        return ret;  /* an error, or ops left unqueued for want of CQ room: no wait */
    /* An io_uring_enter that submitted returns the count, never its wait's -EINTR.
     * The kernel wakes that wait only with wait_nr CQEs past the head (nothing
     * drains between), at the timeout, or for a signal (or an error such as
     * EBADR): ended early with fewer ready, it was interrupted, so go back to
     * Python at once (its handler runs; the caller's wait takes over) instead
     * of waiting out the tick here (tests/ring/test_audit_signals.py).  (The
     * wait asked for at most what the slot awaited: see submit_range.) */
    if (wait_nr > st->remaining[b->slot])
        wait_nr = st->remaining[b->slot];
    int interrupted = submit_waits(ring) && io_uring_cq_ready(ring) < wait_nr &&
                      now_ns() - start_ns < (uint64_t)wait_ms * 1000000u;
    drain(ring, st);
    if (st->remaining[b->slot] && !interrupted) {
        uint64_t spent_ms = (now_ns() - start_ns) / 1000000u;
        if (spent_ms < wait_ms)
            wait_until_for(ring, st, slot_done, b->slot, wait_ms - (uint32_t)spent_ms);
    }
    return 0;
}

/* The batch path's submission: the first *n* ops of the columns *b* as the batch of
 * *slot*, whose results go to *results* (the per-batch fields written here, in the
 * call, instead of three attribute stores through cffi before it: ~1,400 user
 * instructions a batch), then us_submit_batch, a bounded wait and the drain as the
 * comment above says.
 * With *off_mask*, an offset among the first n with a bit of it set (an O_DIRECT
 * offset not a multiple of the logical block size) refuses the batch with -EDOM
 * before anything is queued or counted: a prepared restart checks its new offsets
 * here instead of one Python call per offset.  Returns 0, -errno (us_submit_batch's
 * errors), or k > 0 ops left unqueued for want of CQ room (see submit_range). */
int us_batch_start(struct io_uring *ring, us_state_t *st, struct us_batch *b, uint32_t n, uint32_t slot,
                   int32_t *results, uint64_t off_mask, uint32_t wait_nr, uint32_t wait_ms)
{
    if (off_mask && b->offs) {
        for (uint32_t i = 0; i < n; i++)
            if (b->offs[i] & off_mask)
                return -EDOM;
    }
    b->n = n;
    b->slot = slot;
    b->results = results;
    return batch_submit_from(ring, st, b, 0, 0, wait_nr, wait_ms);
}

/* Go on with a batch that us_batch_start (or an earlier resume) left with its
 * last *left* ops unqueued for want of CQ room; the same returns.  An error
 * from submitting gives up what it did not submit; -EINVAL from the checks
 * here changes nothing: the caller gives the unqueued ops up (us_forget_unqueued). */
int us_batch_resume(struct io_uring *ring, us_state_t *st, const struct us_batch *b, uint32_t left, uint32_t wait_nr,
                    uint32_t wait_ms)
{
    if (b->slot >= US_MAX_SLOTS || !left || left > b->n || st->remaining[b->slot] < left ||
        st->results[b->slot] != b->results)
        return -EINVAL;
    return batch_submit_from(ring, st, b, 1, b->n - left, wait_nr, wait_ms);
}

/* Wait until the CQ has room for *need* more ops in flight (at most the cap),
 * reaping as completions come, for at most timeout_ms (0: unbounded): 0, or
 * -ETIME (the caller checks for lost completions and its deadline, and waits
 * again), -EINTR (back to Python so signal handlers run), -ENOENT when nothing
 * in flight could make room. */
int us_wait_room_for(struct io_uring *ring, us_state_t *st, uint32_t need, uint32_t timeout_ms)
{
    unsigned cap = ring_cap(ring, st);
    if (need > cap)
        need = cap;
    submit_pending(ring, st);  /* nothing queued is left waiting for an enter (SQPOLL: a wakeup) */
    drain(ring, st);
    uint64_t deadline = timeout_ms ? now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
    while (cq_room(ring, st) < need) {
        if (!cq_held(ring))
            return -ENOENT;
        if (timeout_ms && now_ns() >= deadline)
            return -ETIME;
        int ret = wait_cqe_until(ring, st, deadline);
        if (ret < 0 && ret != -ETIME)
            return ret;
        drain(ring, st);
    }
    return 0;
}

/* --- the capability probe's syscall checks ------------------------------------
 * A ring that io_uring_setup created says nothing about io_uring_enter or
 * io_uring_register: a seccomp filter may deny those alone.  The probe therefore
 * submits and reaps one NOP and asks for the opcode table through
 * io_uring_register, and reports each failure with the syscall that failed. */
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int us_probe_nop(struct io_uring *ring, int *cqe_res) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    struct io_uring_cqe *cqe = NULL;
    int ret;
    *cqe_res = 0;
    if (!sqe)
        return -EBUSY;
    io_uring_prep_nop(sqe);
    /* submit_and_wait is one io_uring_enter: a filter denying it answers here */
    ret = io_uring_submit_and_wait(ring, 1);
    if (ret < 0)
        return ret;
    ret = io_uring_peek_cqe(ring, &cqe);
    if (ret < 0)
        return ret;
    *cqe_res = cqe->res;
    io_uring_cqe_seen(ring, cqe);
    return 0;
}

#define US_PROBE_OPS 256

struct us_child_probe {
    int stage;
    int done;
    int setup_err;
    int enter_err;
    int register_err;
    int waited;
    int term_signal;
};

int us_probe_opcodes(struct io_uring *ring, uint8_t *supported) {
    /* io_uring_get_probe_ring hides the errno behind a NULL: call register ourselves */
    union {
        struct io_uring_probe probe;
        char bytes[sizeof(struct io_uring_probe) + US_PROBE_OPS * sizeof(struct io_uring_probe_op)];
    } buf;
    int ret, i, n;
    memset(&buf, 0, sizeof buf);
    ret = io_uring_register_probe(ring, &buf.probe, US_PROBE_OPS);
    if (ret < 0)
        return ret;
    n = buf.probe.ops_len < US_PROBE_OPS ? buf.probe.ops_len : US_PROBE_OPS;
    for (i = 0; i < n; i++)
        supported[i] = (buf.probe.ops[i].flags & IO_URING_OP_SUPPORTED) ? 1 : 0;
    return n;
}

/* Run *body* on a page shared with a forked child, then _exit there, and wait for
 * the child.  The child of a possibly threaded process: *body* makes raw syscalls
 * only (no malloc, no stdio, no Python).  Not dumpable: a SIGSYS kill must not
 * leave a core file.  The page (returned in *page, zeroed first; the caller
 * unmaps it with us_child_done) keeps what the child did before a kill, or an
 * auto-reap under SIGCHLD=SIG_IGN where waitpid has no status.  Returns the
 * waitpid result (the child's pid when its *status is known), or -errno when
 * the page or the fork could not be had (then nothing is left to unmap). */
static pid_t us_run_in_child(void (*body)(void *), size_t size, void **page, int *status) {
    void *shared;
    pid_t pid, w;
    *status = 0;
    *page = NULL;
    shared = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED)
        return -errno;
    memset(shared, 0, size);
    pid = fork();
    if (pid < 0) {
        int err = errno;
        munmap(shared, size);
        return -err;
    }
    if (pid == 0) {
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        body(shared);
        _exit(0);
    }
    do {
        w = waitpid(pid, status, 0);
    } while (w < 0 && errno == EINTR);
    *page = shared;
    return w;
}

static void us_child_done(void *page, size_t size) {
    munmap(page, size);
}

static void us_child_syscalls(void *page) {
    struct us_child_probe *shared = page;
    struct io_uring_params p;
    union {
        struct io_uring_probe probe;
        char bytes[sizeof(struct io_uring_probe) + US_PROBE_OPS * sizeof(struct io_uring_probe_op)];
    } buf;
    long fd, r;
    memset(&p, 0, sizeof p);
    memset(&buf, 0, sizeof buf);
    shared->stage = 1;
    fd = syscall(__NR_io_uring_setup, 1, &p);
    if (fd < 0) {
        shared->setup_err = errno;
        shared->done = 1;
        return;
    }
    shared->stage = 2;
    r = syscall(__NR_io_uring_enter, (int)fd, 0, 0, 0, NULL, 0);
    if (r < 0)
        shared->enter_err = errno;
    shared->stage = 3;
    r = syscall(__NR_io_uring_register, (int)fd, IORING_REGISTER_PROBE, &buf, US_PROBE_OPS);
    if (r < 0)
        shared->register_err = errno;
    close((int)fd);
    shared->done = 1;
}

int us_probe_syscalls_in_child(struct us_child_probe *out) {
    void *page;
    int status;
    pid_t w = us_run_in_child(us_child_syscalls, sizeof *out, &page, &status);
    memset(out, 0, sizeof *out);
    if (w < 0 && page == NULL)
        return (int)w;
    *out = *(struct us_child_probe *)page;
    out->waited = w > 0;
    out->term_signal = (w > 0 && WIFSIGNALED(status)) ? WTERMSIG(status) : 0;
    us_child_done(page, sizeof *out);
    return 0;
}

/* Whether the kernel charges ring memory to RLIMIT_MEMLOCK is asked by making a
 * ring with the soft limit at 0.  Lowering the limit in this process would, for
 * that instant, make another thread's ring or buffer registration fail with
 * ENOMEM: rlimits belong to the process, so only a forked child may lower its
 * own. */
#include <sys/resource.h>

struct us_memlock_answer {
    int done;
    int setup_err;
};

static void us_child_memlock(void *page) {
    struct us_memlock_answer *shared = page;
    struct io_uring_params p;
    struct rlimit lim;
    long fd;
    if (getrlimit(RLIMIT_MEMLOCK, &lim) != 0)
        return;
    lim.rlim_cur = 0;
    if (setrlimit(RLIMIT_MEMLOCK, &lim) != 0)
        return;
    memset(&p, 0, sizeof p);
    fd = syscall(__NR_io_uring_setup, 4, &p);
    shared->setup_err = fd < 0 ? errno : 0;
    if (fd >= 0)
        close((int)fd);
    shared->done = 1;
}

int us_probe_memlock_charged_in_child(void) {
    struct us_memlock_answer answer;
    void *page;
    int status;
    pid_t w = us_run_in_child(us_child_memlock, sizeof answer, &page, &status);
    if (w < 0 && page == NULL)
        return (int)w;
    answer = *(struct us_memlock_answer *)page;
    us_child_done(page, sizeof answer);
    if (answer.done && answer.setup_err == ENOMEM)
        return 1;
    if (answer.done && answer.setup_err == 0)
        return 0;
    return 2; /* not a negative errno: those mean the fork failed */
}
