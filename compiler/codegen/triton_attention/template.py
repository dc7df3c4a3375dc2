"""The Triton attention template: flash-attention forward with online softmax.

One kernel, specialised by constexpr, serves every form braze runs:

- dense prefill: one program per (query block, batch x query head);
- GQA packing (``PACK_GQA``): one program per (row block, batch x K/V head)
  whose rows are the (token, group head) pairs that share one K/V head, so
  K/V are read once for all of them (decode, and an option for prefill);
- split-KV (``SPLIT``): the keys of one program (the range its rows can see:
  with a mask summary, a decode step's valid cache rows only) are cut into
  equal chunks over grid axis 2; each chunk writes its normalised partial output and its
  log-sum-exp to a float32 workspace, and :func:`attention_combine_kernel`
  merges them (decode against a long cache); with ``FUSE_COMBINE`` the last
  chunk of a row block to finish merges them instead (one launch fewer a layer);
- varlen (``VARLEN``): packed tokens ``[T, H, D]`` with ``cu_seqlens``.

Scores live in log2 units: ``qk_scale = scale * log2(e)`` is folded into
one multiply and ``exp2`` replaces ``exp``. The key range of a program is
cut into three segments: a masked prefix (window lower edge, split start),
an unmasked middle (no causal/window/bounds tests at all) and a masked
suffix (the causal diagonal, the last partial block, split end). Blocks
outside the causal/window range are never visited.

NOTE: this module is reloaded when ``TRITON_INTERPRET`` changes after import
(see ``launch._template``); keep module state out of it. It uses core
``triton.language`` builtins and its own ``@triton.jit`` helpers only, never the
``@jit`` functions of ``triton.language.standard`` (``tl.zeros``, ``tl.max``,
``tl.sum``): those are decorated when Triton is imported and cannot run under an
interpreter switched on later (tests).
"""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
FLT_MAX = tl.constexpr(3.4028234663852886e38)


@triton.jit
def _max(a, b):
    return tl.maximum(a, b)


@triton.jit
def _min(a, b):
    return tl.minimum(a, b)


@triton.jit
def _fadd(a, b):
    return a + b


@triton.jit
def _pdl_start():
    """Programmatic dependent launch (compiler/codegen/pdl.py): wait for the kernel before,
    then let the next one be scheduled."""
    tl.extra.cuda.gdc_wait()
    tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def _tanh(x):
    """tanh from one exp (core builtins only; exact at 0, saturating for large |x|)."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _attn_blocks(acc, l_i, m_i, q, K, V, DESC_K, DESC_V, b, hk, MASK, lo, hi, key_lo, key_hi, len_k, pos, row_ok,
                 m_off, slope2, qk_scale, cap2, window, skn, skd, svn, svd, smk, offs_d, offs_dv, POS_K, qpos,
                 MASKED: tl.constexpr, USE_TMA: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
                 MASK_KIND: tl.constexpr, HAS_ALIBI: tl.constexpr, HEAD_D: tl.constexpr, HEAD_DV: tl.constexpr,
                 BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr,
                 DOT_F32: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_POS: tl.constexpr):
    """Online softmax over key blocks [lo, hi) (lo a multiple of BLOCK_N).

    MASKED: apply the key range [key_lo, key_hi), the causal and the window
    rules per element; otherwise every key of every block is visible
    (the caller guarantees it) and only the mask operand / ALiBi apply.
    USE_TMA: K/V blocks come through tensor descriptors ``[B, Hkv, Sk, D]``
    (the copy engine on Hopper; out-of-bounds rows and columns read as zero).
    HAS_POS: the window compares the tokens' positions (``qpos``, keys' from
    ``POS_K``) instead of their rows.
    """
    NEED_SAFE: tl.constexpr = MASKED or (MASK_KIND != 0)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = K + offs_n[:, None] * skn + offs_d[None, :] * skd
        v_ptrs = V + offs_n[:, None] * svn + offs_dv[None, :] * svd
        if MASKED:
            n_ok = offs_n < len_k
        if USE_TMA:
            k = DESC_K.load([b, hk, start_n, 0]).reshape(BLOCK_N, BLOCK_D)
        elif MASKED:
            k = tl.load(k_ptrs, mask=n_ok[:, None] & (offs_d[None, :] < HEAD_D), other=0.0)
        elif HEAD_D == BLOCK_D:
            k = tl.load(k_ptrs)
        else:
            k = tl.load(k_ptrs, mask=offs_d[None, :] < HEAD_D, other=0.0)
        if DOT_F32:
            qk = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
        else:
            qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
        if (not NEED_SAFE) and (not HAS_ALIBI) and (not HAS_SOFTCAP):
            # NOTE: needs qk_scale > 0 (the launcher checks scale > 0).
            m_new = tl.maximum(m_i, tl.reduce(qk, 1, _max) * qk_scale)
            qk = qk * qk_scale - m_new[:, None]
            alpha = tl.math.exp2(m_i - m_new)
        else:
            if HAS_SOFTCAP:
                # softcap * tanh(scale * qk / softcap), in log2 units: qk_scale = scale / softcap
                qk = cap2 * _tanh(qk * qk_scale)
            else:
                qk = qk * qk_scale
            if HAS_ALIBI:
                qk += slope2[:, None] * (offs_n[None, :] - pos[:, None]).to(tl.float32)
            if MASK_KIND != 0:
                mk_ptrs = MASK + m_off[:, None] + offs_n[None, :] * smk
                if MASKED:
                    mk_ok = row_ok[:, None] & n_ok[None, :]
                else:
                    mk_ok = row_ok[:, None]
                if MASK_KIND == 1:
                    mv = tl.load(mk_ptrs, mask=mk_ok, other=0)
                    qk = tl.where(mv != 0, qk, float("-inf"))
                else:
                    mv = tl.load(mk_ptrs, mask=mk_ok, other=0.0).to(tl.float32)
                    # NOTE: scaling -FLT_MAX by log2(e) would overflow to -inf and turn an
                    # HF "finfo.min" row into an empty one; clamp finite values instead.
                    mv = tl.where(mv == float("-inf"), mv, tl.maximum(mv * LOG2E, -FLT_MAX))
                    qk += mv
            if MASKED:
                ok = (offs_n >= key_lo) & (offs_n < key_hi)
                vis = ok[None, :]
                if CAUSAL != 0:
                    vis = vis & (offs_n[None, :] <= pos[:, None])
                if HAS_WINDOW:
                    if HAS_POS:
                        kpos = tl.load(POS_K + offs_n, mask=n_ok, other=0).to(tl.int32)
                        vis = vis & (qpos[:, None] - kpos[None, :] < window)
                    else:
                        vis = vis & (pos[:, None] - offs_n[None, :] < window)
                qk = tl.where(vis, qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.reduce(qk, 1, _max))
            if NEED_SAFE:
                # NOTE: a row may see no key in this block: keep exp2 away from (-inf) - (-inf).
                m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
            else:
                m_sub = m_new
            qk = qk - m_sub[:, None]
            alpha = tl.math.exp2(m_i - m_sub)
        p = tl.math.exp2(qk)
        l_i = l_i * alpha + tl.reduce(p, 1, _fadd)
        acc = acc * alpha[:, None]
        if USE_TMA:
            v = DESC_V.load([b, hk, start_n, 0]).reshape(BLOCK_N, BLOCK_DV)
        elif MASKED:
            v = tl.load(v_ptrs, mask=n_ok[:, None] & (offs_dv[None, :] < HEAD_DV), other=0.0)
        elif HEAD_DV == BLOCK_DV:
            v = tl.load(v_ptrs)
        else:
            v = tl.load(v_ptrs, mask=offs_dv[None, :] < HEAD_DV, other=0.0)
        if DOT_F32:
            acc = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PREC)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def attention_fwd_kernel(
        Q, K, V, O, MASK, SLOPES, LSE, CU_Q, CU_K, POS, DESC_K, DESC_V, SUMMARY,
        qk_scale, cap2,
        sqb, sqh, sqs, sqd,
        skb, skh, sks, skd,
        svb, svh, svs, svd,
        sob, soh, sos, sod, sosp,
        smb, smh, smq, smk,
        slb, slh, slq, slsp,
        n_heads_q, groups, seq_q, seq_k, window, ssum,
        HEAD_D: tl.constexpr, HEAD_DV: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, MASK_KIND: tl.constexpr, HAS_ALIBI: tl.constexpr,
        VARLEN: tl.constexpr, PACK_GQA: tl.constexpr, SPLIT: tl.constexpr, DOT_PREC: tl.constexpr,
        DOT_F32: tl.constexpr, USE_TMA: tl.constexpr, HAS_SUMMARY: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
        HAS_POS: tl.constexpr, FINAL, COUNT, sfb, sfh, sfs, sfd, FUSE_COMBINE: tl.constexpr,
        PDL: tl.constexpr = False):
    """Attention forward. CAUSAL: 0 none, 1 top_left, 2 bottom_right.
    MASK_KIND: 0 none, 1 bool (uint8, nonzero = visible), 2 additive.
    DOT_F32: products in float32 (the CPU interpreter's bf16 dot is wrong, triton 3.8).
    HAS_SUMMARY: SUMMARY (int32 ``[B or 1, row blocks, 4]``, batch stride ``ssum``, written
    by :func:`mask_block_summary_kernel`) narrows the key range of each row block to the
    key blocks its mask leaves visible, and the unmasked middle to the blocks where the
    mask adds nothing (no mask load there).
    HAS_POS (varlen): POS (``[T]``, one packing for q and k) holds each packed token's
    position in its original row; the window compares positions. Positions are at least
    as far apart as rows, so the key range bounds from rows stay safe, but no block is
    known to be inside the window: every block is masked.
    FUSE_COMBINE (with SPLIT): each chunk counts itself done in COUNT (int32, one per
    (row block, batch x head) program, zero before the launch and left zero after); the
    last one merges every chunk's partials into FINAL (``[B, Hq, Sq, Dv]``, strides
    sfb, sfh, sfs, sfd), as :func:`attention_combine_kernel` would.
    PDL: launched with programmatic dependent launch (:func:`_pdl_start`)."""
    if PDL:
        _pdl_start()
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_s = tl.program_id(2)
    if PACK_GQA:
        n_kv = n_heads_q // groups
        b = pid_bh // n_kv
        hk = pid_bh % n_kv
        hq0 = hk * groups
    else:
        b = pid_bh // n_heads_q
        hq0 = pid_bh % n_heads_q
        hk = hq0 // groups
    if VARLEN:
        q_start = tl.load(CU_Q + b)
        len_q = tl.load(CU_Q + b + 1) - q_start
        k_start = tl.load(CU_K + b)
        len_k = tl.load(CU_K + b + 1) - k_start
    else:
        q_start = 0
        len_q = seq_q
        k_start = 0
        len_k = seq_k
    if PACK_GQA:
        n_rows = len_q * groups
    else:
        n_rows = len_q
    if CAUSAL != 0:
        start_m = tl.num_programs(0) - 1 - pid_m  # the longest rows first
    else:
        start_m = pid_m
    row0 = start_m * BLOCK_M
    if row0 >= n_rows:
        return

    offs_m = row0 + tl.arange(0, BLOCK_M)
    row_ok = offs_m < n_rows
    if PACK_GQA:
        tok = offs_m // groups
        head = hq0 + offs_m % groups
        tok_lo = row0 // groups
        tok_hi = tl.minimum((row0 + BLOCK_M - 1) // groups, len_q - 1)
    else:
        tok = offs_m
        head = hq0
        tok_lo = row0
        tok_hi = tl.minimum(row0 + BLOCK_M - 1, len_q - 1)
    if CAUSAL == 2:
        shift = len_k - len_q
    else:
        shift = 0
    pos = tok + shift
    p_lo = tok_lo + shift
    p_hi = tok_hi + shift
    if HAS_POS:
        qpos = tl.load(POS + q_start + tok, mask=row_ok, other=0).to(tl.int32)
        POS_K = POS + k_start
    else:
        qpos = pos
        POS_K = POS

    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    b64 = b.to(tl.int64)
    Q += b64 * sqb
    K += b64 * skb + hk.to(tl.int64) * skh
    V += b64 * svb + hk.to(tl.int64) * svh
    O += b64 * sob
    if VARLEN:
        Q += q_start.to(tl.int64) * sqs
        K += k_start.to(tl.int64) * sks
        V += k_start.to(tl.int64) * svs
        O += q_start.to(tl.int64) * sos
    q_ptrs = Q + (tok * sqs + head * sqh)[:, None] + offs_d[None, :] * sqd
    q = tl.load(q_ptrs, mask=row_ok[:, None] & (offs_d[None, :] < HEAD_D), other=0.0)

    if MASK_KIND != 0:
        MASK += b64 * smb
        m_off = tok * smq + head * smh
    else:
        m_off = tok
    if HAS_ALIBI:
        slope2 = tl.load(SLOPES + head + tl.full([BLOCK_M], 0, tl.int32)).to(tl.float32) * LOG2E
    else:
        slope2 = tl.full([BLOCK_M], 0, tl.float32)

    # Key range of this program, then its unmasked middle [fl, fh).
    lo = len_k * 0
    hi = len_k + 0
    if CAUSAL != 0:
        hi = tl.minimum(hi, p_hi + 1)
    if HAS_WINDOW:
        lo = tl.maximum(lo, p_lo - window + 1)
    if HAS_SUMMARY:
        s_ptr = SUMMARY + b * ssum + start_m * 4
        lo = tl.maximum(lo, tl.load(s_ptr) * BLOCK_N)
        hi = tl.minimum(hi, tl.load(s_ptr + 1) * BLOCK_N)
    if SPLIT:
        # Split the key range this program sees (after the causal rule, the window
        # and the mask summary: a decode step's valid rows, not the whole cache)
        # into equal runs of key blocks, one per split.
        n_split = tl.num_programs(2)
        lo_b = lo // BLOCK_N
        span_b = (tl.maximum(hi, lo) + BLOCK_N - 1) // BLOCK_N - lo_b
        per_b = (span_b + n_split - 1) // n_split
        lo = tl.maximum(lo, (lo_b + pid_s * per_b) * BLOCK_N)
        hi = tl.minimum(hi, (lo_b + (pid_s + 1) * per_b) * BLOCK_N)
    full_lo = lo
    full_hi = hi
    if CAUSAL != 0:
        full_hi = tl.minimum(full_hi, p_lo + 1)
    if HAS_WINDOW:
        full_lo = tl.maximum(full_lo, p_hi - window + 1)
        if HAS_POS:
            full_lo = tl.maximum(full_lo, hi)   # no block known to be inside the window
    # NOTE: lo, full_lo >= 0; full_hi and hi may be negative (no visible key), then
    # every segment below is empty. Integer division of negatives differs between the
    # compiler (truncation) and the interpreter (floor); the maxima make both agree.
    lo_a = (lo // BLOCK_N) * BLOCK_N
    fl = tl.maximum(((full_lo + BLOCK_N - 1) // BLOCK_N) * BLOCK_N, lo_a)
    fh = tl.maximum((full_hi // BLOCK_N) * BLOCK_N, fl)
    if HAS_SUMMARY:
        # NOTE: the middle runs without the mask operand: keep it inside the mask's zero blocks.
        fl = tl.maximum(fl, tl.load(s_ptr + 2) * BLOCK_N)
        fh = tl.maximum(tl.minimum(fh, tl.load(s_ptr + 3) * BLOCK_N), fl)

    m_i = tl.full([BLOCK_M], 0, tl.float32) - float("inf")
    l_i = tl.full([BLOCK_M], 0, tl.float32)
    acc = tl.full([BLOCK_M, BLOCK_DV], 0, tl.float32)
    # NOTE: the three segments partition [lo_a, hi): masked prefix, unmasked middle, masked suffix.
    for seg in tl.static_range(3):
        if seg == 0:
            s_lo = lo_a
            s_hi = tl.minimum(fl, hi)
        elif seg == 1:
            s_lo = fl
            s_hi = fh
        else:
            s_lo = fh
            s_hi = hi
        acc, l_i, m_i = _attn_blocks(
            acc, l_i, m_i, q, K, V, DESC_K, DESC_V, b, hk, MASK, s_lo, s_hi, lo, hi, len_k, pos, row_ok, m_off,
            slope2, qk_scale, cap2, window, sks, skd, svs, svd, smk, offs_d, offs_dv, POS_K, qpos, seg != 1, USE_TMA,
            CAUSAL, HAS_WINDOW, MASK_KIND * (1 - HAS_SUMMARY * (seg == 1)), HAS_ALIBI, HEAD_D, HEAD_DV, BLOCK_D,
            BLOCK_DV, BLOCK_N, DOT_PREC, DOT_F32, HAS_SOFTCAP, HAS_POS)

    # Rows that saw no key: l == 0 and acc == 0 -> zeros.
    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    o_off = tok * sos + head * soh
    o_mask = row_ok[:, None] & (offs_dv[None, :] < HEAD_DV)
    if SPLIT:
        O_ws = O
        LSE += b64 * slb
        O += pid_s.to(tl.int64) * sosp
        lse = tl.where(empty, float("-inf"), m_i + tl.math.log2(tl.where(empty, 1.0, l_i)))
        tl.store(LSE + pid_s.to(tl.int64) * slsp + tok * slq + head * slh, lse, mask=row_ok)
    o_ptrs = O + o_off[:, None] + offs_dv[None, :] * sod
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=o_mask)
    if SPLIT and FUSE_COMBINE:
        # NOTE: the barrier orders every thread's stores before the release of the count
        # (one thread runs a scalar atomic); the merging program's barrier after its
        # acquire orders its threads' loads after it; .cg loads skip the (incoherent) L1.
        tl.debug_barrier()
        c_ptr = COUNT + pid_bh * tl.num_programs(0) + pid_m
        done = tl.atomic_add(c_ptr, 1, sem="acq_rel")
        if done == tl.num_programs(2) - 1:
            tl.debug_barrier()
            l_off = tok * slq + head * slh
            mx = tl.full([BLOCK_M], 0, tl.float32) - float("inf")
            for s in range(0, tl.num_programs(2)):
                mx = tl.maximum(mx, tl.load(LSE + s * slsp + l_off, mask=row_ok, other=float("-inf"),
                                            cache_modifier=".cg"))
            mx = tl.where(mx == float("-inf"), 0.0, mx)
            den = tl.full([BLOCK_M], 0, tl.float32)
            merged = tl.full([BLOCK_M, BLOCK_DV], 0, tl.float32)
            for s in range(0, tl.num_programs(2)):
                w = tl.math.exp2(tl.load(LSE + s * slsp + l_off, mask=row_ok, other=float("-inf"),
                                         cache_modifier=".cg") - mx)
                part = tl.load(O_ws + s * sosp + o_off[:, None] + offs_dv[None, :] * sod, mask=o_mask, other=0.0,
                               cache_modifier=".cg")
                den += w
                merged += w[:, None] * part.to(tl.float32)
            merged = merged / tl.where(den > 0.0, den, 1.0)[:, None]
            f_ptrs = FINAL + b64 * sfb + (tok * sfs + head * sfh)[:, None] + offs_dv[None, :] * sfd
            tl.store(f_ptrs, merged.to(FINAL.dtype.element_ty), mask=o_mask)
            tl.atomic_xchg(c_ptr, 0)    # ready for the next launch (and a CUDA graph's replay)


@triton.jit
def mask_tile_flags_kernel(MASK, FLAGS, ROW_VIS, smb, smh, smq, smk, n_heads_m, seq_q, seq_k, sfb, srb, srh,
                           TOK_BLOCK: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
                           MASK_KIND: tl.constexpr, VISIBLE_ABOVE: tl.constexpr):
    """One program per (key block, block of TOK_BLOCK query tokens, batch) of the mask
    operand: FLAGS ``[b, query block, key block]`` (int8) gets bit 0 when some key of
    the tile is visible in some head, bit 1 when the mask adds nothing to any entry of
    the tile in any head; ROW_VIS ``[b, head, token]`` (int32, zeroed) is raised to 1
    for each row that sees a key in this tile.

    Visible: bool nonzero; additive above VISIBLE_ABOVE (HF's ``finfo.min`` counts as
    masked: its exp2 is 0 next to any visible key). "Adds nothing": bool all visible,
    additive all 0. A tile reaching past ``seq_k`` never adds nothing (the kernel's
    masked path bounds those keys).
    """
    kb = tl.program_id(0)
    qb = tl.program_id(1)
    b = tl.program_id(2)
    offs_t = tl.arange(0, ROWS)
    offs_r = qb * TOK_BLOCK + offs_t
    r_ok = (offs_t < TOK_BLOCK) & (offs_r < seq_q)
    offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < seq_k
    ok = r_ok[:, None] & n_ok[None, :]
    MASK += b.to(tl.int64) * smb
    ROW_VIS += b.to(tl.int64) * srb
    any_vis = n_heads_m * 0
    all_zero = n_heads_m * 0 + 1
    for h in range(0, n_heads_m):
        ptrs = MASK + h * smh + offs_r[:, None] * smq + offs_n[None, :] * smk
        if MASK_KIND == 1:
            mv = tl.load(ptrs, mask=ok, other=0)
            vis = mv != 0
            zero = vis
        else:
            mv = tl.load(ptrs, mask=ok, other=0.0).to(tl.float32)
            vis = mv > VISIBLE_ABOVE
            zero = mv == 0.0
        vis = (vis & ok).to(tl.int32)
        # NOTE: rows past the block do not count; keys past seq_k make a tile not zero.
        zero = ((zero | (r_ok[:, None] == 0)) & n_ok[None, :]).to(tl.int32)
        row_vis = tl.reduce(vis, 1, _max)
        tl.atomic_max(ROW_VIS + h * srh + offs_r, row_vis, mask=r_ok & (row_vis > 0))
        any_vis = tl.maximum(any_vis, tl.reduce(row_vis, 0, _max))
        all_zero = tl.minimum(all_zero, tl.reduce(tl.reduce(zero, 1, _min), 0, _min))
    n_kb = tl.num_programs(0)
    tl.store(FLAGS + b * sfb + qb * n_kb + kb, (any_vis + 2 * all_zero).to(tl.int8))


@triton.jit
def mask_block_summary_kernel(FLAGS, ROW_VIS, SUMMARY, n_heads_m, seq_q, n_kb, sfb, srb, srh, ssum,
                              TOK_BLOCK: tl.constexpr, ROWS: tl.constexpr, KB_P2: tl.constexpr):
    """Per (block of TOK_BLOCK query tokens, batch), from :func:`mask_tile_flags_kernel`:
    four int32 key-block indices ``[first visible, last visible + 1, zero run start,
    zero run end)``; the zero run is the first contiguous run of tiles that add nothing.
    If a row of the block sees no key in some head (eager gives such a row a uniform
    average over every key), the summary is the whole range without a zero run: that
    block keeps the full masked path. KB_P2: the key blocks rounded up to a power of 2
    (the flags of a row block are read as one vector).
    """
    qb = tl.program_id(0)
    b = tl.program_id(1)
    offs_t = tl.arange(0, ROWS)
    offs_r = qb * TOK_BLOCK + offs_t
    r_ok = (offs_t < TOK_BLOCK) & (offs_r < seq_q)
    rows_ok = n_kb * 0 + 1
    for h in range(0, n_heads_m):
        rv = tl.load(ROW_VIS + b.to(tl.int64) * srb + h * srh + offs_r, mask=r_ok, other=1)
        rows_ok = tl.minimum(rows_ok, tl.reduce(rv, 0, _min))
    kb = tl.arange(0, KB_P2)
    f = tl.load(FLAGS + b * sfb + qb * n_kb + kb, mask=kb < n_kb, other=0).to(tl.int32)
    vis = (f & 1) != 0
    zero = (f & 2) != 0
    first = tl.reduce(tl.where(vis, kb, n_kb), 0, _min)
    last = tl.reduce(tl.where(vis, kb, -1), 0, _max)
    z_lo = tl.reduce(tl.where(zero, kb, n_kb), 0, _min)
    z_hi = tl.reduce(tl.where((kb > z_lo) & (zero == 0), kb, n_kb), 0, _min)
    full = rows_ok == 0
    none = full | (z_lo >= n_kb)  # no zero run: written as the empty run [0, 0)
    out = SUMMARY + b * ssum + qb * 4
    tl.store(out, tl.where(full, 0, first))
    tl.store(out + 1, tl.where(full, n_kb, last + 1))
    tl.store(out + 2, tl.where(none, 0, z_lo))
    tl.store(out + 3, tl.where(none, 0, z_hi))


@triton.jit
def attention_combine_kernel(WS, LSE, O, n_heads, seq_q, n_splits,
                             swsp, slsp, sob, soh, sos, sod,
                             HEAD_DV: tl.constexpr, BLOCK_DV: tl.constexpr, SPLITS_P2: tl.constexpr,
                             PDL: tl.constexpr = False):
    """Merge split-KV partials of one output row: the log-sum-exp weighted mean.

    WS: float32 ``[splits, rows, HEAD_DV]`` (normalised partial outputs),
    LSE: float32 ``[splits, rows]`` (log2 units, -inf for a chunk with no key);
    row = (b * n_heads + h) * seq_q + i. PDL: as in :func:`attention_fwd_kernel`.
    """
    if PDL:
        _pdl_start()
    r = tl.program_id(0)
    b = r // (n_heads * seq_q)
    h = (r // seq_q) % n_heads
    i = r % seq_q
    offs_s = tl.arange(0, SPLITS_P2)
    lse = tl.load(LSE + offs_s * slsp + r, mask=offs_s < n_splits, other=float("-inf"))
    mx = tl.reduce(lse, 0, _max)
    mx = tl.where(mx == float("-inf"), 0.0, mx)
    den = tl.reduce(tl.math.exp2(lse - mx), 0, _fadd)
    offs_d = tl.arange(0, BLOCK_DV)
    d_ok = offs_d < HEAD_DV
    acc = tl.full([BLOCK_DV], 0, tl.float32)
    r64 = r.to(tl.int64)
    for s in range(0, n_splits):
        w = tl.math.exp2(tl.load(LSE + s * slsp + r64) - mx)
        o = tl.load(WS + s * swsp + r64 * HEAD_DV + offs_d, mask=d_ok, other=0.0)
        acc += w * o
    out = acc / tl.where(den > 0.0, den, 1.0)
    o_ptrs = O + b.to(tl.int64) * sob + h * soh + i * sos + offs_d * sod
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=d_ok)
