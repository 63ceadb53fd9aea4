// Segmented sliding-window aggregates over rows sorted by key, then event time.
//
// Compiled at run time by NVRTC (no nvcc at build time). Rows of one key form a segment; a
// row's RANGE window is every row of its segment with time in [t - w, t], ties at t included
// (UNBOUNDED: every row of the segment up to t). Nulls are skipped as SQL aggregates skip them.
//
// Exactness, matching the CPU kernels' contract:
// - counts are integer prefix counts (exact);
// - sums and spreads come from segment-local prefix sums kept in double-double arithmetic
//   (about 106 bits), of values shifted by the segment's first finite value, so a window sum
//   is the difference of two prefixes with an error of about 2^-104 of the prefix, far below
//   one ulp of the result for real data;
// - a window whose finite values are all equal has variance exactly 0 (checked with the
//   window's min and max), as the CPU kernels give;
// - NaN and infinities are counted apart and give what IEEE arithmetic over the window gives;
// - min and max follow IEEE totalOrder (NaN largest), as the CPU kernels do, through a
//   two-level block decomposition, so a query costs O(128 + width / 4096) loads;
// - integer inputs (given as i64 besides their f64 conversions) have exact wrapping prefix
//   sums and are compared as themselves: sums, minima and maxima leave as i64, equal to the CPU
//   kernels' (and DataFusion's wrapping) answers.
//
// The kernels do not assume fused multiply-add contraction: the host compiles with
// --fmad=false so the error-free transformations below stay error-free.

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;

#define L1_SHIFT 6
#define L2_SHIFT 12
#define I64_MAX 9223372036854775807LL
#define I64_MIN (-I64_MAX - 1LL)

struct dd {
    double hi;
    double lo;
};

__device__ __forceinline__ dd make_dd(double hi, double lo) {
    dd r;
    r.hi = hi;
    r.lo = lo;
    return r;
}

__device__ __forceinline__ dd quick_two_sum(double a, double b) {
    double s = a + b;
    return make_dd(s, b - (s - a));
}

__device__ __forceinline__ dd two_sum(double a, double b) {
    double s = a + b;
    double bb = s - a;
    return make_dd(s, (a - (s - bb)) + (b - bb));
}

__device__ __forceinline__ dd dd_add(dd a, dd b) {
    dd s = two_sum(a.hi, b.hi);
    dd t = two_sum(a.lo, b.lo);
    s.lo += t.hi;
    s = quick_two_sum(s.hi, s.lo);
    s.lo += t.lo;
    return quick_two_sum(s.hi, s.lo);
}

__device__ __forceinline__ dd dd_neg(dd a) { return make_dd(-a.hi, -a.lo); }

__device__ __forceinline__ dd dd_sub(dd a, dd b) { return dd_add(a, dd_neg(b)); }

__device__ __forceinline__ dd two_prod(double a, double b) {
    double p = a * b;
    return make_dd(p, fma(a, b, -p));
}

__device__ __forceinline__ dd dd_mul(dd a, dd b) {
    dd p = two_prod(a.hi, b.hi);
    p.lo += a.hi * b.lo + a.lo * b.hi;
    return quick_two_sum(p.hi, p.lo);
}

__device__ __forceinline__ dd dd_div(dd a, double b) {
    double q1 = a.hi / b;
    dd r = dd_sub(a, two_prod(q1, b));
    double q2 = r.hi / b;
    r = dd_sub(r, two_prod(q2, b));
    double q3 = r.hi / b;
    dd q = quick_two_sum(q1, q2);
    return dd_add(q, make_dd(q3, 0.0));
}

// IEEE totalOrder as a signed integer order (the same map as Rust's f64::total_cmp), with every
// NaN made the canonical positive NaN first: NaN is the largest value whatever its sign bit, as
// in the CPU kernels, PostgreSQL and DataFusion.
__device__ __forceinline__ i64 order_key(double x) {
    i64 bits = isnan(x) ? 0x7ff8000000000000LL : __double_as_longlong(x);
    return bits ^ (i64)(((u64)(bits >> 63)) >> 1);
}

__device__ __forceinline__ double from_order_key(i64 key) {
    return __longlong_as_double(key ^ (i64)(((u64)(key >> 63)) >> 1));
}

__device__ __forceinline__ bool is_valid(const unsigned char* valid, u64 row) {
    return valid == 0 || valid[row] != 0;
}

// The key min/max order row `r` by: an integer input's value itself, else the float's key.
__device__ __forceinline__ i64 row_key(const double* values, const i64* ivalues, u64 r) {
    return ivalues != 0 ? ivalues[r] : order_key(values[r]);
}

// Writes each row's segment index. One thread per segment.
extern "C" __global__ void segment_ids(const u64* offsets, u32 segments, u32* row_segment) {
    u32 s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= segments) return;
    for (u64 r = offsets[s]; r < offsets[s + 1]; ++r) row_segment[r] = s;
}

// Segment-local inclusive prefix counts and double-double prefix sums of one input column.
// One thread per segment. `sums` is null when only counts are needed.
// `ivalues` (integer inputs only, else null) adds exact wrapping prefix sums in `isum`.
extern "C" __global__ void segment_prefix(
    const u64* offsets, u32 segments, const double* values, const unsigned char* valid,
    u32* count, u32* nan, u32* pos_inf, u32* neg_inf, double* shift, double* sum_hi,
    double* sum_lo, double* sq_hi, double* sq_lo, const i64* ivalues, u64* isum) {
    u32 s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= segments) return;
    u32 n = 0, n_nan = 0, n_pos = 0, n_neg = 0;
    u64 exact = 0;
    bool shifted = false;
    double c = 0.0;
    dd s1 = make_dd(0.0, 0.0);
    dd s2 = make_dd(0.0, 0.0);
    for (u64 r = offsets[s]; r < offsets[s + 1]; ++r) {
        if (is_valid(valid, r)) {
            double x = values[r];
            ++n;
            if (ivalues != 0) exact += (u64)ivalues[r];
            if (isnan(x)) {
                ++n_nan;
            } else if (isinf(x)) {
                if (x > 0.0) ++n_pos; else ++n_neg;
            } else if (sum_hi != 0) {
                if (!shifted) {
                    c = x;
                    shifted = true;
                }
                dd d = two_sum(x, -c);  // exact: x - c as a double-double
                s1 = dd_add(s1, d);
                s2 = dd_add(s2, dd_mul(d, d));
            }
        }
        count[r] = n;
        if (isum != 0) isum[r] = exact;
        nan[r] = n_nan;
        pos_inf[r] = n_pos;
        neg_inf[r] = n_neg;
        if (sum_hi != 0) {
            sum_hi[r] = s1.hi;
            sum_lo[r] = s1.lo;
            sq_hi[r] = s2.hi;
            sq_lo[r] = s2.lo;
        }
    }
    if (sum_hi != 0) shift[s] = c;
}

// Per block of 2^L1_SHIFT rows (global alignment), the min and max order keys of its valid
// values; empty blocks hold the neutral keys. One thread per block.
extern "C" __global__ void block_extrema_l1(
    const double* values, const i64* ivalues, const unsigned char* valid, u64 rows, i64* min_l1,
    i64* max_l1) {
    u64 b = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    u64 begin = b << L1_SHIFT;
    if (begin >= rows) return;
    u64 end = min(rows, begin + (1ULL << L1_SHIFT));
    i64 lo = I64_MAX, hi = I64_MIN;
    for (u64 r = begin; r < end; ++r) {
        if (!is_valid(valid, r)) continue;
        i64 k = row_key(values, ivalues, r);
        lo = min(lo, k);
        hi = max(hi, k);
    }
    min_l1[b] = lo;
    max_l1[b] = hi;
}

// Per block of 2^L2_SHIFT rows, from the level-1 blocks.
extern "C" __global__ void block_extrema_l2(
    const i64* min_l1, const i64* max_l1, u64 l1_blocks, i64* min_l2, i64* max_l2) {
    u64 b = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    u64 begin = b << (L2_SHIFT - L1_SHIFT);
    if (begin >= l1_blocks) return;
    u64 end = min(l1_blocks, begin + (1ULL << (L2_SHIFT - L1_SHIFT)));
    i64 lo = I64_MAX, hi = I64_MIN;
    for (u64 i = begin; i < end; ++i) {
        lo = min(lo, min_l1[i]);
        hi = max(hi, max_l1[i]);
    }
    min_l2[b] = lo;
    max_l2[b] = hi;
}

struct Extremes {
    i64 lo;
    i64 hi;
};

__device__ __forceinline__ void take_row(
    Extremes& e, const double* values, const i64* ivalues, const unsigned char* valid, u64 r) {
    if (!is_valid(valid, r)) return;
    i64 k = row_key(values, ivalues, r);
    e.lo = min(e.lo, k);
    e.hi = max(e.hi, k);
}

// Min and max order keys over rows [first, last] (inclusive).
__device__ Extremes range_extremes(
    const double* values, const i64* ivalues, const unsigned char* valid, const i64* min_l1,
    const i64* max_l1, const i64* min_l2, const i64* max_l2, u64 first, u64 last) {
    const u64 l1 = 1ULL << L1_SHIFT, l2 = 1ULL << L2_SHIFT;
    Extremes e;
    e.lo = I64_MAX;
    e.hi = I64_MIN;
    u64 r = first;
    while (r <= last && (r & (l1 - 1)) != 0) take_row(e, values, ivalues, valid, r++);
    while (r + l1 - 1 <= last && (r & (l2 - 1)) != 0) {
        e.lo = min(e.lo, min_l1[r >> L1_SHIFT]);
        e.hi = max(e.hi, max_l1[r >> L1_SHIFT]);
        r += l1;
    }
    while (r + l2 - 1 <= last) {
        e.lo = min(e.lo, min_l2[r >> L2_SHIFT]);
        e.hi = max(e.hi, max_l2[r >> L2_SHIFT]);
        r += l2;
    }
    while (r + l1 - 1 <= last) {
        e.lo = min(e.lo, min_l1[r >> L1_SHIFT]);
        e.hi = max(e.hi, max_l1[r >> L1_SHIFT]);
        r += l1;
    }
    while (r <= last) take_row(e, values, ivalues, valid, r++);
    return e;
}

// Aggregate kinds; the host passes the same numbers.
#define K_COUNT 0
#define K_SUM 1
#define K_AVG 2
#define K_MIN 3
#define K_MAX 4
#define K_STDDEV_SAMP 5
#define K_VAR_SAMP 6
#define K_STDDEV_POP 7
#define K_VAR_POP 8

__device__ __forceinline__ u32 window_of(const u32* prefix, u64 first, u64 last, u64 begin) {
    return prefix[last] - (first > begin ? prefix[first - 1] : 0u);
}

__device__ __forceinline__ dd window_dd(
    const double* hi, const double* lo, u64 first, u64 last, u64 begin) {
    dd w = make_dd(hi[last], lo[last]);
    if (first > begin) w = dd_sub(w, make_dd(hi[first - 1], lo[first - 1]));
    return w;
}

// One feature column: aggregate `kind` of one input over each row's window. One thread per row.
// `width` < 0 means UNBOUNDED PRECEDING. Outputs one value and one validity byte per row; for
// integer inputs (`ivalues` non-null) sums, minima and maxima also go to `out_int` exactly.
extern "C" __global__ void window_aggregate(
    u64 rows, const u64* offsets, const u32* row_segment, const i64* times, int kind, i64 width,
    const double* values, const unsigned char* valid, const u32* count, const u32* nan,
    const u32* pos_inf, const u32* neg_inf, const double* shift, const double* sum_hi,
    const double* sum_lo, const double* sq_hi, const double* sq_lo, const i64* min_l1,
    const i64* max_l1, const i64* min_l2, const i64* max_l2, const i64* ivalues,
    const u64* isum, double* out, unsigned char* out_valid, i64* out_int) {
    u64 r = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    u32 s = row_segment[r];
    u64 begin = offsets[s], end = offsets[s + 1];
    i64 t = times[r];
    // First row of the window: the first of the segment with time >= t - width.
    u64 first = begin;
    if (width >= 0) {
        i64 lower = t < I64_MIN + width ? I64_MIN : t - width;
        u64 a = begin, b = r;
        while (a < b) {
            u64 m = a + (b - a) / 2;
            if (times[m] < lower) a = m + 1; else b = m;
        }
        first = a;
    }
    // Last row: the last tie of t (ties see each other).
    u64 a = r + 1, b = end;
    while (a < b) {
        u64 m = a + (b - a) / 2;
        if (times[m] <= t) a = m + 1; else b = m;
    }
    u64 last = a - 1;

    u32 n = window_of(count, first, last, begin);
    double value = 0.0;
    bool ok = false;
    if (kind == K_COUNT) {
        value = (double)n;
        ok = true;
    } else if (kind == K_MIN || kind == K_MAX) {
        if (n > 0) {
            Extremes e = range_extremes(
                values, ivalues, valid, min_l1, max_l1, min_l2, max_l2, first, last);
            i64 key = kind == K_MIN ? e.lo : e.hi;
            if (ivalues != 0) {
                out_int[r] = key;
                value = (double)key;
            } else {
                value = from_order_key(key);
            }
            ok = true;
        }
    } else if (kind == K_SUM && isum != 0) {
        if (n > 0) {
            u64 total = isum[last] - (first > begin ? isum[first - 1] : 0ULL);
            out_int[r] = (i64)total;
            value = (double)(i64)total;
            ok = true;
        }
    } else if (n > 0) {
        u32 n_nan = window_of(nan, first, last, begin);
        u32 n_pos = window_of(pos_inf, first, last, begin);
        u32 n_neg = window_of(neg_inf, first, last, begin);
        u32 finite = n - n_nan - n_pos - n_neg;
        bool non_finite = n_nan > 0 || n_pos > 0 || n_neg > 0;
        double special = (n_nan > 0 || (n_pos > 0 && n_neg > 0))
                             ? __longlong_as_double(0x7ff8000000000000LL)
                             : (n_pos > 0 ? __longlong_as_double(0x7ff0000000000000LL)
                                          : __longlong_as_double(0xfff0000000000000LL));
        dd s1 = window_dd(sum_hi, sum_lo, first, last, begin);
        if (kind == K_SUM || kind == K_AVG) {
            double sum = special;
            if (!non_finite) {
                dd total = dd_add(s1, two_prod((double)finite, shift[s]));
                sum = total.hi + total.lo;
            }
            value = kind == K_SUM ? sum : sum / (double)n;
            ok = true;
        } else {
            bool sample = kind == K_STDDEV_SAMP || kind == K_VAR_SAMP;
            if (!sample || n > 1) {
                double m2;
                if (non_finite) {
                    m2 = __longlong_as_double(0x7ff8000000000000LL);
                } else {
                    Extremes e = range_extremes(
                        values, ivalues, valid, min_l1, max_l1, min_l2, max_l2, first, last);
                    if (e.lo == e.hi) {
                        m2 = 0.0;
                    } else {
                        dd s2 = window_dd(sq_hi, sq_lo, first, last, begin);
                        dd spread = dd_sub(s2, dd_div(dd_mul(s1, s1), (double)n));
                        // Below the sums' rounding (SPREAD_NOISE in moments.rs): 0.
                        double m = spread.hi + spread.lo;
                        m2 = m <= (s2.hi + s2.lo) * 1.2621774483536189e-29 /* 2^-96 */ ? 0.0 : m;
                    }
                }
                double var = m2 / (double)(sample ? n - 1 : n);
                value = (kind == K_STDDEV_SAMP || kind == K_STDDEV_POP) ? sqrt(var) : var;
                ok = true;
            }
        }
    }
    out[r] = ok ? value : 0.0;
    out_valid[r] = ok ? 1 : 0;
}
