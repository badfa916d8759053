/* cffi cdef for uringstack's binding: the parts of liburing we call plus our
 * batch helpers.  Structs are partial ("...;") so the C compiler supplies the
 * real layout of the installed liburing; constants use "..." for the same
 * reason.  This file is parsed by cffi, not by a C compiler. */

/* --- constants ------------------------------------------------------------ */
#define IORING_SETUP_IOPOLL ...
#define IORING_SETUP_SQPOLL ...
#define IORING_SETUP_SQ_AFF ...
#define IORING_SETUP_CQSIZE ...
#define IORING_SETUP_CLAMP ...
#define IORING_SETUP_ATTACH_WQ ...
#define IORING_SETUP_R_DISABLED ...
#define IORING_SETUP_SUBMIT_ALL ...
#define IORING_SETUP_COOP_TASKRUN ...
#define IORING_SETUP_TASKRUN_FLAG ...
#define IORING_SETUP_SQE128 ...
#define IORING_SETUP_CQE32 ...
#define IORING_SETUP_SINGLE_ISSUER ...
#define IORING_SETUP_DEFER_TASKRUN ...

#define IOSQE_FIXED_FILE ...
#define IOSQE_IO_DRAIN ...
#define IOSQE_IO_LINK ...
#define IOSQE_IO_HARDLINK ...
#define IOSQE_ASYNC ...

#define IORING_FSYNC_DATASYNC ...

#define US_MAX_SLOTS ...
#define US_CQ_RESERVE ...

/* opcode numbers are an enum in the kernel header: re-exported as ints */
#define US_OP_NOP ...
#define US_OP_READV ...
#define US_OP_WRITEV ...
#define US_OP_FSYNC ...
#define US_OP_READ_FIXED ...
#define US_OP_WRITE_FIXED ...
#define US_OP_ASYNC_CANCEL ...
#define US_OP_READ ...
#define US_OP_WRITE ...
#define US_OP_URING_CMD ...

/* --- liburing types --------------------------------------------------------- */
struct iovec { void *iov_base; size_t iov_len; };
struct io_uring_params {
    uint32_t sq_entries;
    uint32_t cq_entries;
    uint32_t flags;
    uint32_t sq_thread_cpu;
    uint32_t sq_thread_idle;
    uint32_t features;
    uint32_t wq_fd;
    ...;
};
struct io_uring { unsigned flags; int ring_fd; unsigned features; ...; };
struct io_uring_probe { uint8_t last_op; uint8_t ops_len; ...; };

int io_uring_queue_init_params(unsigned entries, struct io_uring *ring, struct io_uring_params *p);
void io_uring_queue_exit(struct io_uring *ring);
struct io_uring_probe *io_uring_get_probe_ring(struct io_uring *ring);
void io_uring_free_probe(struct io_uring_probe *probe);
int io_uring_opcode_supported(const struct io_uring_probe *p, int op);
int io_uring_register_buffers(struct io_uring *ring, const struct iovec *iovecs, unsigned nr_iovecs);
int io_uring_unregister_buffers(struct io_uring *ring);
int io_uring_register_files(struct io_uring *ring, const int *files, unsigned nr_files);
int io_uring_register_files_update(struct io_uring *ring, unsigned off, int *files, unsigned nr_files);
int io_uring_unregister_files(struct io_uring *ring);
int io_uring_register_eventfd(struct io_uring *ring, int fd);

/* --- uringstack batch helpers ---------------------------------------------- */
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

typedef ... us_state_t;   /* opaque: per-ring completion bookkeeping */

struct us_counters {
    uint64_t enters;
    uint64_t submitted;
    uint64_t reaped;
    uint64_t stray;
    uint64_t spins;
    uint64_t short_submits; /* submissions the kernel stopped at a failing op (submit_pending) */
};

us_state_t *us_state_new(void);
void us_state_free(us_state_t *st);
struct us_counters *us_state_counters(us_state_t *st);
void us_state_set_spin(us_state_t *st, uint32_t spin_us);
void us_state_set_cap(us_state_t *st, uint32_t cap);
uint32_t us_slot_remaining(const us_state_t *st, uint32_t slot);
uint32_t us_inflight(const us_state_t *st);

int us_submit_batch(struct io_uring *ring, us_state_t *st, const struct us_batch *b, uint32_t wait_nr,
                    uint32_t wait_ms);
int us_wait_slot(struct io_uring *ring, us_state_t *st, uint32_t slot);
int us_wait_any(struct io_uring *ring, us_state_t *st, uint32_t min_done);
int us_wait_slot_for(struct io_uring *ring, us_state_t *st, uint32_t slot, uint32_t timeout_ms);
int us_wait_any_for(struct io_uring *ring, us_state_t *st, uint32_t min_done, uint32_t timeout_ms);
uint32_t us_lost_completions(struct io_uring *ring, const us_state_t *st);
int us_reap_ready(struct io_uring *ring, us_state_t *st);
int us_poll(struct io_uring *ring, us_state_t *st);
int us_cancel_all(struct io_uring *ring, us_state_t *st, uint32_t timeout_ms);
int us_cancel_each(struct io_uring *ring, us_state_t *st, const uint64_t *user_data, uint32_t n);
int us_test_drop_cqe(struct io_uring *ring);
int us_test_drop_cqe_polled(struct io_uring *ring);
int64_t us_first_misaligned(const uint64_t *addrs, const uint32_t *lens, const uint64_t *offs,
                            uint32_t n, uint32_t align);
int64_t us_first_short(const int32_t *results, const uint32_t *lens, uint32_t n);
int us_rw_one(struct io_uring *ring, us_state_t *st, uint32_t slot, uint8_t opcode, int32_t fd, uint8_t sqe_flags,
              void *buf, uint32_t len, uint64_t off, uint16_t buf_index, int32_t *result, uint32_t wait_ms);
/* us_rw_one's arguments that stay the same from op to op, bound once (Ring.bind_rw_one) */
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
int us_rw_one_bound(const struct us_rw_bound *b, uint32_t slot, uint64_t off, int32_t *result, uint32_t wait_ms);

/* the one-call-per-batch path (see uring_helpers.c) */
struct us_batch_view {
    uint32_t *done_n;
    uint16_t *done;
    const uint32_t *remaining;
    const uint32_t *inflight;
    const unsigned *cq_khead;
    const unsigned *cq_ktail;
    const unsigned *sq_kflags;
    uint32_t *room_ms;
    uint32_t *hold;
};
#define US_HOLD_LEADER ...
int us_wait_cq(struct io_uring *ring, uint32_t spin_us, uint32_t timeout_ms);
#define US_CQ_NEEDS_FLUSH ...
void us_batch_view(struct io_uring *ring, us_state_t *st, struct us_batch_view *out);
int us_batch_start(struct io_uring *ring, us_state_t *st, struct us_batch *b, uint32_t n, uint32_t slot,
                   int32_t *results, uint64_t off_mask, uint32_t wait_nr, uint32_t wait_ms);
/* the cap on ops in flight (at most the CQ's entries; see cq_room in uring_helpers.c) */
uint32_t us_cq_room(const struct io_uring *ring, const us_state_t *st);
int us_batch_resume(struct io_uring *ring, us_state_t *st, const struct us_batch *b, uint32_t left, uint32_t wait_nr,
                    uint32_t wait_ms);
uint32_t us_forget_unqueued(us_state_t *st, uint32_t slot, uint32_t n);
int us_wait_room_for(struct io_uring *ring, us_state_t *st, uint32_t need, uint32_t timeout_ms);

/* --- the capability probe's syscall checks --------------------------------- */
struct us_child_probe {
    int stage;        /* 1 io_uring_setup, 2 io_uring_enter, 3 io_uring_register: the last one begun */
    int done;         /* the child reached _exit */
    int setup_err;    /* errno of each syscall, 0 when it worked (or was not reached) */
    int enter_err;
    int register_err;
    int waited;       /* waitpid returned the child's status */
    int term_signal;  /* the signal that killed the child, 0 if none */
};
int us_probe_nop(struct io_uring *ring, int *cqe_res);
int us_probe_opcodes(struct io_uring *ring, uint8_t *supported);
int us_probe_syscalls_in_child(struct us_child_probe *out);
/* ENOMEM from a 4-entry io_uring_setup made by a forked child whose soft
 * RLIMIT_MEMLOCK is 0: 1 charged, 0 not, 2 unknown (another errno, or the child
 * never answered); negative errno when the fork itself failed. */
int us_probe_memlock_charged_in_child(void);
