# cython: language_level=3
"""MoeInitRoutingQuant kernels: the routing sort and the gather + static int8 quantization.

Inputs are validated and made contiguous by npusim/moe_init_routing_quant.py; these functions
only see raw views (fp16/bf16 as uint16) and trust that rowIdx is a permutation of [0, n*k).
Arithmetic: shared/spec/ARITHMETIC.md section 5 (ops-transformer moe/moe_init_routing_quant/op_kernel).
"""
from cython.parallel cimport prange
from libc.stdint cimport uint16_t, uint32_t, int8_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy
from ascend_cast cimport *

cdef int DIGIT_BITS = 16          # one counting pass per 16 bits of (expert - min expert)


cdef inline int8_t _quant_half(uint16_t h, double sh, double oh) noexcept nogil:
    """MoeGatherOut<T>::Compute on one fp16 value: Muls then Adds in fp16 (each one RNE rounding,
    IEEE overflow to inf), then Cast half -> int8 CAST_RINT, saturating (NaN -> 0)."""
    cdef double v = half_round(<double>half_to_f32(h) * sh)
    v = half_round(v + oh)
    return to_int8(v, RM_RINT)


def quant_tables(uint16_t scale_half, uint16_t offset_half, int8_t[::1] from_half, int8_t[::1] from_bf16):
    """Fill the two 65536-entry tables of the quantization pipeline for a given fp16 scale/offset:
    from_half[h] = quant(h) for every fp16 code h, and from_bf16[b] = quant(half(float(b))) for every
    bf16 code b (bf16 -> fp32 exact, fp32 -> fp16 CAST_NONE = RNE, IEEE overflow).
    The bf16 kernel path goes half -> int32 -> half -> int8, all CAST_RINT: the half value is already
    integral after rint, so it equals the direct half -> int8 CAST_RINT used here."""
    cdef double sh = half_to_f32(scale_half)
    cdef double oh = half_to_f32(offset_half)
    cdef uint32_t c
    with nogil:
        for c in range(65536):
            from_half[c] = _quant_half(<uint16_t>c, sh, oh)
        for c in range(65536):
            from_bf16[c] = from_half[<uint16_t>round_to_fmt(bf16_to_f32(<uint16_t>c), F_FP16, RM_RINT, False)]


def route_sort(const int32_t[::1] expert, const int32_t[::1] row, int64_t expert_min, int64_t span,
               int32_t[::1] expanded_expert, int32_t[::1] sorted_row, int32_t[::1] expanded_row_idx):
    """Stable sort of the flattened expert ids (ties keep the flattened position order, as Sort/MrgSort
    do), by LSD counting passes over u = expert - expert_min (0 <= u < span).

    expanded_expert[t] = expert[order[t]]; sorted_row[t] = row[order[t]] (expanded_dst_to_src_row);
    expanded_row_idx[sorted_row[t]] = t (the scatter done by MoeSrcToDstOp)."""
    cdef Py_ssize_t total = expert.shape[0]
    cdef Py_ssize_t t, p
    cdef int shift, nbits = 0
    cdef uint32_t digit, mask, buckets
    cdef int64_t acc, c
    cdef int32_t* order = NULL
    cdef int32_t* tmp = NULL
    cdef int32_t* swap
    cdef int64_t* count = NULL
    if total == 0:
        return
    while nbits < 33 and ((<int64_t>1) << nbits) < span:
        nbits += 1
    order = <int32_t*>malloc(total * sizeof(int32_t))
    tmp = <int32_t*>malloc(total * sizeof(int32_t))
    if order == NULL or tmp == NULL:
        free(order)
        free(tmp)
        raise MemoryError()
    with nogil:
        for t in range(total):
            order[t] = <int32_t>t
        shift = 0
        while shift < nbits:
            buckets = <uint32_t>1 << (DIGIT_BITS if nbits - shift > DIGIT_BITS else nbits - shift)
            mask = buckets - 1
            count = <int64_t*>calloc(buckets, sizeof(int64_t))
            if count == NULL:
                break
            for t in range(total):
                digit = (<uint32_t>(<int64_t>expert[order[t]] - expert_min) >> shift) & mask
                count[digit] += 1
            acc = 0
            for digit in range(buckets):
                c = count[digit]
                count[digit] = acc
                acc += c
            for t in range(total):
                p = order[t]
                digit = (<uint32_t>(<int64_t>expert[p] - expert_min) >> shift) & mask
                tmp[count[digit]] = <int32_t>p
                count[digit] += 1
            free(count)
            count = NULL
            swap = order
            order = tmp
            tmp = swap
            shift += DIGIT_BITS
        if shift >= nbits:
            for t in range(total):
                p = order[t]
                expanded_expert[t] = expert[p]
                sorted_row[t] = row[p]
                expanded_row_idx[row[p]] = <int32_t>t
    free(order)
    free(tmp)
    if shift < nbits:
        raise MemoryError()


ctypedef fused x_code_t:
    uint16_t        # fp16 / bf16 codes: the table is indexed by the code itself
    float           # fp32: Cast fp32 -> fp16 CAST_NONE (RNE, IEEE overflow) first, then the fp16 table


cdef inline int8_t _quant(x_code_t v, const int8_t* table) noexcept nogil:
    if x_code_t is float:
        return table[<uint16_t>round_to_fmt(v, F_FP16, RM_RINT, False)]
    else:
        return table[v]


def gather_quant(const x_code_t[:, ::1] x, const int8_t[::1] table, const int32_t[::1] expanded_row_idx,
                 int64_t active_rows, int8_t[:, ::1] out):
    """Gather + quant through a 65536-entry table (indexed by the x code, or by the fp16 code of fp32 x).

    Follows the SPLIT_N order of MoeGatherOut: source row i goes to out[t] for every slot j with
    t = expanded_row_idx[j*n + i] < active_rows. Row i is quantized once into its first
    destination and copied to the others (same bytes as quantizing each copy)."""
    cdef Py_ssize_t n = x.shape[0], cols = x.shape[1]
    cdef Py_ssize_t k = expanded_row_idx.shape[0] // n if n else 0
    cdef Py_ssize_t i, j, c
    cdef int64_t t, first
    cdef const x_code_t* src
    cdef int8_t* dst
    if n == 0 or cols == 0 or active_rows == 0:
        return
    with nogil:
        for i in prange(n, schedule="static"):
            first = -1
            for j in range(k):
                t = expanded_row_idx[j * n + i]
                if t >= active_rows:
                    continue
                if first < 0:
                    first = t
                    src = &x[i, 0]
                    dst = &out[t, 0]
                    for c in range(cols):
                        dst[c] = _quant(src[c], &table[0])
                else:
                    memcpy(&out[t, 0], &out[first, 0], cols)
