/*
 * joulestream eBPF counters, compiled by bcc at agent start-up.
 *
 * One LRU hash keyed by (v2 cgroup id, tgid) holds this interval's counts; user space reads
 * and deletes every entry once per interval (BPF_MAP_LOOKUP_AND_DELETE_BATCH), so entries of
 * exited tasks and removed cgroups go with the next read and the map only ever holds what was
 * active in one interval. tgid is only set in the root cgroup, where kernel threads live
 * (user space tells them apart by PF_KTHREAD); elsewhere the cgroup is the workload.
 *
 * No kernel struct is dereferenced: raw tracepoint arguments used are scalars and tracepoint
 * records are laid out from tracefs when bcc compiles, so headers of another kernel version
 * (Debian's nearest linux-headers) give correct code.
 *
 * Build-time switches (-D, set by agents/collectors/ebpf/program.py from what this kernel offers):
 *   MAP_ENTRIES, ROOT_CGROUP_ID, JS_NR_CPUS, BLOCK_IO_START, HW_CYCLES, HW_INSTRUCTIONS,
 *   HW_CACHE_MISSES, PAGE_CACHE_KPROBE, PAGE_CACHE_KFUNC_FOLIO, PAGE_CACHE_KFUNC_PAGE.
 */
#include <uapi/linux/ptrace.h>
#include <uapi/linux/bpf.h>

struct key_t {
    u64 cgroup_id;
    u32 tgid;
    u32 pad;
};

struct counts_t {
    u64 cpu_ns;
    u64 cycles;
    u64 instructions;
    u64 cache_misses;
    u64 net_tx;
    u64 net_rx;
    u64 block_irq;
    u64 page_cache_hits;
    u64 read_bytes;
    u64 write_bytes;
};

BPF_TABLE("lru_hash", struct key_t, struct counts_t, counts, MAP_ENTRIES);
/* When the task now on this CPU started running (or was last charged). */
BPF_PERCPU_ARRAY(oncpu_since, u64, 1);

static __always_inline struct counts_t *current_counts(void)
{
    struct key_t key = {};
    struct counts_t zero = {};

    key.cgroup_id = bpf_get_current_cgroup_id();
    if (key.cgroup_id == ROOT_CGROUP_ID)
        key.tgid = bpf_get_current_pid_tgid() >> 32;
    return counts.lookup_or_try_init(&key, &zero);
}

/* Hardware counters: per-CPU perf events; the delta since the last switch on this CPU is
 * charged to the task that ran. Compiled in only for the events this node can open. */
#if HW_CYCLES
BPF_PERF_ARRAY(hw_cycles, JS_NR_CPUS);
BPF_PERCPU_ARRAY(last_cycles, u64, 1);
static __always_inline u64 cycles_delta(void)
{
    struct bpf_perf_event_value value = {};
    int zero = 0;
    u64 *last = last_cycles.lookup(&zero);

    if (!last || hw_cycles.perf_counter_value(CUR_CPU_IDENTIFIER, &value, sizeof(value)))
        return 0;
    u64 delta = *last ? value.counter - *last : 0;
    *last = value.counter;
    return delta;
}
#endif

#if HW_INSTRUCTIONS
BPF_PERF_ARRAY(hw_instructions, JS_NR_CPUS);
BPF_PERCPU_ARRAY(last_instructions, u64, 1);
static __always_inline u64 instructions_delta(void)
{
    struct bpf_perf_event_value value = {};
    int zero = 0;
    u64 *last = last_instructions.lookup(&zero);

    if (!last || hw_instructions.perf_counter_value(CUR_CPU_IDENTIFIER, &value, sizeof(value)))
        return 0;
    u64 delta = *last ? value.counter - *last : 0;
    *last = value.counter;
    return delta;
}
#endif

#if HW_CACHE_MISSES
BPF_PERF_ARRAY(hw_cache_misses, JS_NR_CPUS);
BPF_PERCPU_ARRAY(last_cache_misses, u64, 1);
static __always_inline u64 cache_misses_delta(void)
{
    struct bpf_perf_event_value value = {};
    int zero = 0;
    u64 *last = last_cache_misses.lookup(&zero);

    if (!last || hw_cache_misses.perf_counter_value(CUR_CPU_IDENTIFIER, &value, sizeof(value)))
        return 0;
    u64 delta = *last ? value.counter - *last : 0;
    *last = value.counter;
    return delta;
}
#endif

/* Charge the time (and hardware counts) since the last charge on this CPU to the current
 * task. At sched_switch the current task is the one switching out; in flush_cpu it is the
 * task interrupted on that CPU, so a task that never switches is still counted per interval.
 * The idle task (pid 0) is not charged. */
static __always_inline void charge_current(void)
{
    int zero = 0;
    u64 now = bpf_ktime_get_ns();
    u64 *since = oncpu_since.lookup(&zero);

    if (!since)
        return;
    u64 then = *since;
    *since = now;
#if HW_CYCLES
    u64 cycles = cycles_delta();
#endif
#if HW_INSTRUCTIONS
    u64 instructions = instructions_delta();
#endif
#if HW_CACHE_MISSES
    u64 cache_misses = cache_misses_delta();
#endif
    if (then == 0 || (u32)bpf_get_current_pid_tgid() == 0)
        return;
    struct counts_t *c = current_counts();
    if (!c)
        return;
    __sync_fetch_and_add(&c->cpu_ns, now - then);
#if HW_CYCLES
    __sync_fetch_and_add(&c->cycles, cycles);
#endif
#if HW_INSTRUCTIONS
    __sync_fetch_and_add(&c->instructions, instructions);
#endif
#if HW_CACHE_MISSES
    __sync_fetch_and_add(&c->cache_misses, cache_misses);
#endif
}

RAW_TRACEPOINT_PROBE(sched_switch)
{
    charge_current();
    return 0;
}

/* Not attached: user space runs it on every CPU (BPF_PROG_TEST_RUN, BPF_F_TEST_RUN_ON_CPU)
 * right before reading, so the running tasks' time up to now is in the interval. */
int flush_cpu(struct bpf_raw_tracepoint_args *ctx)
{
    charge_current();
    return 0;
}

/* softirq vectors: 2 NET_TX, 3 NET_RX, 4 BLOCK; charged to the interrupted task's cgroup. */
RAW_TRACEPOINT_PROBE(softirq_entry)
{
    u32 vec = ctx->args[0];

    if (vec < 2 || vec > 4)
        return 0;
    struct counts_t *c = current_counts();
    if (!c)
        return 0;
    if (vec == 2)
        __sync_fetch_and_add(&c->net_tx, 1);
    else if (vec == 3)
        __sync_fetch_and_add(&c->net_rx, 1);
    else
        __sync_fetch_and_add(&c->block_irq, 1);
    return 0;
}

/* rwbs: optional 'F' (preflush), then 'W'rite / 'R'ead / 'D'iscard / 'N'one ... */
static __always_inline void count_block(const char *rwbs, u64 bytes)
{
    char op = rwbs[0] == 'F' ? rwbs[1] : rwbs[0];

    if (op != 'R' && op != 'W')
        return;
    struct counts_t *c = current_counts();
    if (!c)
        return;
    if (op == 'R')
        __sync_fetch_and_add(&c->read_bytes, bytes);
    else
        __sync_fetch_and_add(&c->write_bytes, bytes);
}

#if BLOCK_IO_START
/* Linux >= 6.5: a new request, in the submitting task's context; bios merged into an
 * existing request are counted at the merge, so every byte is counted once, at the bottom
 * (request-based) device only. */
TRACEPOINT_PROBE(block, block_io_start)
{
    count_block(args->rwbs, args->bytes);
    return 0;
}

TRACEPOINT_PROBE(block, block_bio_backmerge)
{
    count_block(args->rwbs, (u64)args->nr_sector << 9);
    return 0;
}

TRACEPOINT_PROBE(block, block_bio_frontmerge)
{
    count_block(args->rwbs, (u64)args->nr_sector << 9);
    return 0;
}
#else
/* Older kernels: at issue, in the dispatching task's context (the submitter when plugged,
 * a kblockd worker when an I/O scheduler dispatches later). */
TRACEPOINT_PROBE(block, block_rq_issue)
{
    count_block(args->rwbs, args->bytes);
    return 0;
}
#endif

static __always_inline void count_page_cache_hit(void)
{
    struct counts_t *c = current_counts();

    if (c)
        __sync_fetch_and_add(&c->page_cache_hits, 1);
}

#if PAGE_CACHE_KPROBE
int page_cache_kprobe(struct pt_regs *ctx)
{
    count_page_cache_hit();
    return 0;
}
#endif

#if PAGE_CACHE_KFUNC_FOLIO
KFUNC_PROBE(folio_mark_accessed)
{
    count_page_cache_hit();
    return 0;
}
#endif

#if PAGE_CACHE_KFUNC_PAGE
KFUNC_PROBE(mark_page_accessed)
{
    count_page_cache_hit();
    return 0;
}
#endif
