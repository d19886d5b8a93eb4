# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled log scanner: the hot path behind :mod:`housekeeper.scan`.

Private. ``housekeeper.scan`` is the facade; ``_scan_py.py`` is the reference twin
that applies exactly the same rules, and the tests prove the two agree.

How it is fast. A file is read in large chunks into one reusable buffer. Each chunk
splits into a head (the end of the line the previous chunk left open), a region of
complete lines, and a tail (the start of a line the next chunk finishes). In the
region, a SIMD prefilter compares every position against one case-folded trigram
(the rarest, by a byte-frequency guess) of each pattern, 16 or 32 positions at a
time; only the rare candidates are verified byte by byte, and only around a verified
hit are line boundaries looked up and the line evaluated. Lines without an error
pattern cost a few vector instructions per 16-32 bytes, plus a vectorised newline
count for the line numbers. Heads and tails go through a small streaming line state
that keeps only a bounded prefix of the text and the last (longest needle - 1) bytes,
so a line of any length (a 100 MB progress bar) is scanned in constant memory.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport EINTR, errno
from libc.string cimport memchr, memcpy, memset
from posix.types cimport off_t
from posix.unistd cimport pread

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    #if defined(__GNUC__) || defined(__clang__)
    #define HK_HAVE_VEC 1
    #if defined(__x86_64__) || defined(__i386__)
    #define HK_X86 1
    #endif
    #endif

    /* Entries of the prefilter, one per pattern, grouped by how many anchor bytes
       they have (3, 2 or 1); each anchor byte is stored broadcast over 32 bytes. */
    typedef struct {
        int n3, n2, n1;
        const unsigned char *b0, *b1, *b2;   /* (n3+n2+n1) * 32 bytes each */
    } hk_filter;

    /* ASCII case folding of one byte; other bytes are left as they are. */
    static unsigned char hk_lower_table[256];
    static void hk_init_lower(void) {
        for (int i = 0; i < 256; i++)
            hk_lower_table[i] = (i >= 'A' && i <= 'Z') ? (unsigned char)(i + 32) : (unsigned char)i;
    }

    static void hk_fold(unsigned char *dst, const unsigned char *src, Py_ssize_t n) {
        Py_ssize_t i = 0;
    #ifdef HK_HAVE_VEC
        typedef unsigned char v16 __attribute__((vector_size(16)));
        for (; i + 16 <= n; i += 16) {
            v16 v;
            memcpy(&v, src + i, 16);
            v16 upper = (v16)((v >= (unsigned char)'A') & (v <= (unsigned char)'Z'));
            v |= upper & (unsigned char)0x20;
            memcpy(dst + i, &v, 16);
        }
    #endif
        for (; i < n; i++) dst[i] = hk_lower_table[src[i]];
    }

    static Py_ssize_t hk_count_nl(const unsigned char *s, Py_ssize_t n) {
        Py_ssize_t total = 0, i = 0;
    #ifdef HK_HAVE_VEC
        typedef unsigned char v16 __attribute__((vector_size(16)));
        while (n - i >= 16) {
            v16 acc = {0};
            for (int k = 0; k < 255 && n - i >= 16; k++, i += 16) {
                v16 v;
                memcpy(&v, s + i, 16);
                acc -= (v16)(v == (unsigned char)'\\n');
            }
            unsigned char lanes[16];
            memcpy(lanes, &acc, 16);
            for (int j = 0; j < 16; j++) total += lanes[j];
        }
    #endif
        for (; i < n; i++) total += (s[i] == '\\n');
        return total;
    }

    /* Index of the last newline in s[lo:hi), or lo - 1. */
    static Py_ssize_t hk_last_nl(const unsigned char *s, Py_ssize_t lo, Py_ssize_t hi) {
        while (hi > lo) {
            hi--;
            if (s[hi] == '\\n') return hi;
        }
        return lo - 1;
    }

    /* First occurrence of needle[0:m] in hay[0:n] (both already folded), or -1. */
    static Py_ssize_t hk_find(const unsigned char *hay, Py_ssize_t n, const unsigned char *needle, Py_ssize_t m) {
        if (m > n) return -1;
    #if defined(__GLIBC__)
        const unsigned char *hit = (const unsigned char *)memmem(hay, (size_t)n, needle, (size_t)m);
        return hit ? (Py_ssize_t)(hit - hay) : -1;
    #else
        const unsigned char *p = hay, *end = hay + n - m + 1;
        while (p < end) {
            p = (const unsigned char *)memchr(p, needle[0], (size_t)(end - p));
            if (!p) return -1;
            if (memcmp(p, needle, (size_t)m) == 0) return (Py_ssize_t)(p - hay);
            p++;
        }
        return -1;
    #endif
    }

    /* The prefilter. Positions q in [q, end) are tested W at a time: lane i is a
       candidate when (s[q+i+j] | 0x20) equals anchor byte j of some entry. OR-ing
       0x20 folds ASCII letters to lower case (and merges a few non-letters with
       their bit-5 twins, which only adds candidates; verification is exact).
       Returns the first block start with a candidate and its lane mask in *mask, or
       end. Reads up to W + 2 bytes past end: the caller keeps that much slack. */
    #define HK_FILTER_BODY(V, W)                                                      \\
        const int n3 = F->n3, n32 = F->n3 + F->n2, nall = F->n3 + F->n2 + F->n1;      \\
        const unsigned char *b0 = F->b0, *b1 = F->b1, *b2 = F->b2;                    \\
        for (; q < end; q += W) {                                                     \\
            V f0, f1, f2, c0, c1, c2, acc;                                            \\
            memcpy(&f0, s + q, W); memcpy(&f1, s + q + 1, W); memcpy(&f2, s + q + 2, W); \\
            f0 |= (unsigned char)0x20; f1 |= (unsigned char)0x20; f2 |= (unsigned char)0x20; \\
            acc = f0 ^ f0;                                                            \\
            int k = 0;                                                                \\
            for (; k < n3; k++) {                                                     \\
                memcpy(&c0, b0 + 32 * k, W); memcpy(&c1, b1 + 32 * k, W); memcpy(&c2, b2 + 32 * k, W); \\
                acc |= (V)((f0 == c0) & (f1 == c1) & (f2 == c2));                     \\
            }                                                                         \\
            for (; k < n32; k++) {                                                    \\
                memcpy(&c0, b0 + 32 * k, W); memcpy(&c1, b1 + 32 * k, W);            \\
                acc |= (V)((f0 == c0) & (f1 == c1));                                  \\
            }                                                                         \\
            for (; k < nall; k++) {                                                   \\
                memcpy(&c0, b0 + 32 * k, W);                                          \\
                acc |= (V)(f0 == c0);                                                 \\
            }                                                                         \\
            uint64_t words[W / 8], any = 0;                                           \\
            memcpy(words, &acc, W);                                                   \\
            for (int j = 0; j < W / 8; j++) any |= words[j];                          \\
            if (any) {                                                                \\
                unsigned char lanes[W];                                               \\
                unsigned long long m = 0;                                                       \\
                memcpy(lanes, &acc, W);                                               \\
                for (int j = 0; j < W; j++) if (lanes[j]) m |= 1ULL << j;      \\
                *mask = m;                                                            \\
                return q;                                                             \\
            }                                                                         \\
        }                                                                             \\
        return end;

    #ifdef HK_HAVE_VEC
    typedef unsigned char hk_v16 __attribute__((vector_size(16)));
    static Py_ssize_t hk_filter_16(const unsigned char *s, Py_ssize_t q, Py_ssize_t end,
                                   const hk_filter *F, unsigned long long *mask) {
        HK_FILTER_BODY(hk_v16, 16)
    }
    #ifdef HK_X86
    typedef unsigned char hk_v32 __attribute__((vector_size(32)));
    __attribute__((target("avx2")))
    static Py_ssize_t hk_filter_32(const unsigned char *s, Py_ssize_t q, Py_ssize_t end,
                                   const hk_filter *F, unsigned long long *mask) {
        HK_FILTER_BODY(hk_v32, 32)
    }
    #endif
    #endif

    #ifndef HK_HAVE_VEC
    /* Without vector extensions: every position is a candidate block of one lane. */
    static Py_ssize_t hk_filter_1(const unsigned char *s, Py_ssize_t q, Py_ssize_t end,
                                  const hk_filter *F, unsigned long long *mask) {
        (void)s; (void)F;
        if (q < end) *mask = 1;
        return q < end ? q : end;
    }
    #endif

    typedef Py_ssize_t (*hk_filter_fn)(const unsigned char *, Py_ssize_t, Py_ssize_t,
                                       const hk_filter *, unsigned long long *);

    /* The widest prefilter this CPU runs, and its lane count. */
    static hk_filter_fn hk_pick_filter(int *width) {
    #ifdef HK_HAVE_VEC
    #ifdef HK_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2")) { *width = 32; return hk_filter_32; }
    #endif
        *width = 16;
        return hk_filter_16;
    #else
        *width = 1;
        return hk_filter_1;
    #endif
    }
    """
    ctypedef struct hk_filter:
        int n3
        int n2
        int n1
        const unsigned char *b0
        const unsigned char *b1
        const unsigned char *b2
    ctypedef Py_ssize_t (*hk_filter_fn)(const unsigned char *, Py_ssize_t, Py_ssize_t,
                                        const hk_filter *, unsigned long long *) noexcept nogil
    unsigned char hk_lower_table[256]
    void hk_init_lower() noexcept nogil
    void hk_fold(unsigned char *dst, const unsigned char *src, Py_ssize_t n) noexcept nogil
    Py_ssize_t hk_count_nl(const unsigned char *s, Py_ssize_t n) noexcept nogil
    Py_ssize_t hk_last_nl(const unsigned char *s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    Py_ssize_t hk_find(const unsigned char *hay, Py_ssize_t n,
                       const unsigned char *needle, Py_ssize_t m) noexcept nogil
    hk_filter_fn hk_pick_filter(int *width) noexcept nogil

hk_init_lower()

cdef int _WIDTH = 0
cdef hk_filter_fn _FILTER = hk_pick_filter(&_WIDTH)

#: Lane count of the prefilter in use (32 with AVX2, 16 with SSE2/NEON, 1 without).
FILTER_WIDTH = _WIDTH

# Rough relative frequency of bytes in job logs, used only to pick each pattern's
# rarest trigram for the prefilter. A bad guess costs speed, never correctness.
cdef dict _FREQ = {}


def _init_freq():
    for i in range(256):
        _FREQ[i] = 1 if i >= 0x80 or i < 0x20 else 3
    for ch, f in zip(b"etaoinsrlcdhumpfgbywvkxjqz",
                     (60, 45, 42, 40, 40, 38, 36, 35, 25, 22, 22, 20, 15,
                      14, 13, 11, 10, 8, 8, 7, 6, 5, 3, 1, 1, 1)):
        _FREQ[ch] = f
    for ch in b"0123456789":
        _FREQ[ch] = 30
    for ch, f in ((ord(" "), 120), (ord("."), 15), (ord(":"), 12), (ord("="), 10),
                  (ord("/"), 10), (ord("_"), 10), (ord("-"), 10), (ord(","), 8)):
        _FREQ[ch] = f


_init_freq()


def _rarest_start(bytes pattern, int k):
    """Start of the k-byte window of ``pattern`` least likely to occur in a log."""
    best, best_score = 0, None
    for i in range(len(pattern) - k + 1):
        score = 1
        for j in range(k):
            score *= _FREQ[pattern[i + j] | 0x20]
        if best_score is None or score < best_score:
            best, best_score = i, score
    return best


cdef class _Scanner:
    """Buffers and state for one scan; freed when the scan returns."""

    # needles: the patterns first, then the distinct whitelist words; all folded
    cdef int npat, nneedles, nentries, maxneedle
    cdef unsigned char *needle_data
    cdef Py_ssize_t *needle_off
    cdef Py_ssize_t *needle_len
    cdef int *entry_words      # word needle indices, entry after entry
    cdef int *entry_start      # nentries + 1 offsets into entry_words
    cdef int *entry_needed
    # prefilter entries, and for each: its pattern and the trigram's start in it
    cdef hk_filter filt
    cdef unsigned char *filt_mem
    cdef int *filt_pattern
    cdef int *filt_shift
    cdef unsigned char *filt_bytes   # 3 anchor bytes per entry (already | 0x20)
    cdef int filt_anchors[3]         # entries with 3, 2, 1 anchors
    # buffers
    cdef unsigned char *buf
    cdef Py_ssize_t buf_size
    cdef unsigned char *scratch
    cdef unsigned char *tail
    cdef Py_ssize_t tail_len
    cdef unsigned char *prefix
    cdef Py_ssize_t prefix_len
    cdef Py_ssize_t max_text
    # the open line
    cdef long long line_start
    cdef long long line_length
    cdef unsigned char *found
    # results
    cdef long long errors, excused
    cdef Py_ssize_t max_lines
    cdef list lines
    cdef list line_patterns

    def __cinit__(self):
        self.needle_data = NULL
        self.needle_off = NULL
        self.needle_len = NULL
        self.entry_words = NULL
        self.entry_start = NULL
        self.entry_needed = NULL
        self.filt_mem = NULL
        self.filt_pattern = NULL
        self.filt_shift = NULL
        self.filt_bytes = NULL
        self.buf = NULL
        self.scratch = NULL
        self.tail = NULL
        self.prefix = NULL
        self.found = NULL

    def __dealloc__(self):
        PyMem_Free(self.needle_data)
        PyMem_Free(self.needle_off)
        PyMem_Free(self.needle_len)
        PyMem_Free(self.entry_words)
        PyMem_Free(self.entry_start)
        PyMem_Free(self.entry_needed)
        PyMem_Free(self.filt_mem)
        PyMem_Free(self.filt_pattern)
        PyMem_Free(self.filt_shift)
        PyMem_Free(self.filt_bytes)
        PyMem_Free(self.buf)
        PyMem_Free(self.scratch)
        PyMem_Free(self.tail)
        PyMem_Free(self.prefix)
        PyMem_Free(self.found)

    cdef void _alloc_fail(self) except *:
        raise MemoryError()

    cdef void setup(self, tuple patterns, tuple whitelist, tuple needed,
                    Py_ssize_t max_lines, Py_ssize_t max_text, Py_ssize_t buf_size) except *:
        cdef list needles = [bytes(p) for p in patterns]
        cdef dict word_index = {}
        cdef list entries = []
        cdef Py_ssize_t i, j, total, pos
        cdef bytes nd
        for words in whitelist:
            idx = []
            for w in words:
                w = bytes(w)
                if w not in word_index:
                    word_index[w] = len(needles)
                    needles.append(w)
                idx.append(word_index[w])
            entries.append(idx)
        self.npat = len(patterns)
        self.nneedles = len(needles)
        self.nentries = len(entries)
        self.maxneedle = max([len(nd) for nd in needles], default=1)
        total = sum([len(nd) for nd in needles])
        self.needle_data = <unsigned char *>PyMem_Malloc(total + 1)
        self.needle_off = <Py_ssize_t *>PyMem_Malloc((self.nneedles + 1) * sizeof(Py_ssize_t))
        self.needle_len = <Py_ssize_t *>PyMem_Malloc((self.nneedles + 1) * sizeof(Py_ssize_t))
        self.found = <unsigned char *>PyMem_Malloc(self.nneedles + 1)
        if not (self.needle_data and self.needle_off and self.needle_len and self.found):
            self._alloc_fail()
        pos = 0
        for i in range(self.nneedles):
            nd = needles[i]
            self.needle_off[i] = pos
            self.needle_len[i] = len(nd)
            if len(nd):
                memcpy(self.needle_data + pos, <const char *>nd, len(nd))
            pos += len(nd)
        memset(self.found, 0, self.nneedles + 1)
        self.entry_start = <int *>PyMem_Malloc((self.nentries + 1) * sizeof(int))
        self.entry_needed = <int *>PyMem_Malloc((self.nentries + 1) * sizeof(int))
        total = sum([len(e) for e in entries])
        self.entry_words = <int *>PyMem_Malloc((total + 1) * sizeof(int))
        if not (self.entry_start and self.entry_needed and self.entry_words):
            self._alloc_fail()
        pos = 0
        for i in range(self.nentries):
            self.entry_start[i] = pos
            self.entry_needed[i] = needed[i]
            for j in entries[i]:
                self.entry_words[pos] = j
                pos += 1
        self.entry_start[self.nentries] = pos
        self._setup_filter(patterns)

        self.max_lines = max_lines
        self.max_text = max_text
        self.buf_size = buf_size
        # slack past the data: the prefilter reads up to 34 bytes beyond its end
        self.buf = <unsigned char *>PyMem_Malloc(buf_size + 64)
        self.scratch = <unsigned char *>PyMem_Malloc(buf_size + self.maxneedle + 64)
        self.tail = <unsigned char *>PyMem_Malloc(self.maxneedle + 1)
        self.prefix = <unsigned char *>PyMem_Malloc(max_text + 2)
        if not (self.buf and self.scratch and self.tail and self.prefix):
            self._alloc_fail()
        memset(self.buf, 0, buf_size + 64)
        self.tail_len = 0
        self.prefix_len = 0
        self.line_length = 0
        self.errors = 0
        self.excused = 0
        self.lines = []
        self.line_patterns = []

    cdef void _setup_filter(self, tuple patterns) except *:
        cdef Py_ssize_t n = len(patterns), k, slot, i, j
        cdef unsigned char *mem
        cdef bytes p
        order = sorted(range(n), key=lambda i: -min(len(patterns[i]), 3))
        self.filt_mem = <unsigned char *>PyMem_Malloc(3 * 32 * (n + 1) + 32)
        self.filt_pattern = <int *>PyMem_Malloc((n + 1) * sizeof(int))
        self.filt_shift = <int *>PyMem_Malloc((n + 1) * sizeof(int))
        self.filt_bytes = <unsigned char *>PyMem_Malloc(3 * (n + 1))
        if not (self.filt_mem and self.filt_pattern and self.filt_shift and self.filt_bytes):
            self._alloc_fail()
        # 32-byte aligned so that no broadcast load crosses a cache line
        mem = self.filt_mem + (32 - (<size_t>self.filt_mem) % 32) % 32
        self.filt.b0 = mem
        self.filt.b1 = mem + 32 * n
        self.filt.b2 = mem + 64 * n
        self.filt_anchors[0] = self.filt_anchors[1] = self.filt_anchors[2] = 0
        for slot in range(n):
            k = order[slot]
            p = patterns[k]
            na = min(len(p), 3)
            shift = _rarest_start(p, na)
            self.filt_pattern[slot] = k
            self.filt_shift[slot] = shift
            for j in range(3):
                byte = (p[shift + j] | 0x20) if j < na else 0
                self.filt_bytes[3 * slot + j] = byte
                memset(mem + 32 * (n * j + slot), byte, 32)
            self.filt_anchors[3 - na] += 1
        self.filt.n3 = self.filt_anchors[0]
        self.filt.n2 = self.filt_anchors[1]
        self.filt.n1 = self.filt_anchors[2]

    # ---- the open line -------------------------------------------------------

    cdef inline void feed(self, const unsigned char *data, Py_ssize_t n) noexcept:
        """Add n bytes (no newline among them) to the open line."""
        cdef Py_ssize_t take, m, keep, i
        if self.prefix_len <= self.max_text:
            take = self.max_text + 1 - self.prefix_len
            if take > n:
                take = n
            memcpy(self.prefix + self.prefix_len, data, take)
            self.prefix_len += take
        self.line_length += n
        if n == 0:
            return
        memcpy(self.scratch, self.tail, self.tail_len)
        hk_fold(self.scratch + self.tail_len, data, n)
        m = self.tail_len + n
        for i in range(self.nneedles):
            if not self.found[i] and hk_find(self.scratch, m, self.needle_data + self.needle_off[i],
                                              self.needle_len[i]) >= 0:
                self.found[i] = 1
        keep = self.maxneedle - 1
        if keep > m:
            keep = m
        memcpy(self.tail, self.scratch + m - keep, keep)
        self.tail_len = keep

    cdef void finish_line(self, long long lineno) except *:
        """The open line ended: judge it, record it, and open the next one."""
        cdef int pattern = -1, e, w, hits
        cdef Py_ssize_t i, text_len
        cdef bint excused = False
        for i in range(self.npat):
            if self.found[i]:
                pattern = i
                break
        if pattern >= 0:
            self.errors += 1
            for e in range(self.nentries):
                hits = 0
                for w in range(self.entry_start[e], self.entry_start[e + 1]):
                    hits += self.found[self.entry_words[w]]
                if hits >= self.entry_needed[e]:
                    excused = True
                    break
            if excused:
                self.excused += 1
            elif len(self.lines) < self.max_lines:
                text_len = self.prefix_len
                if self.line_length == self.prefix_len and text_len > 0 \
                        and self.prefix[text_len - 1] == 13:
                    text_len -= 1    # the whole line is here and ends in \r
                if text_len > self.max_text:
                    text_len = self.max_text
                self.lines.append((lineno, PyBytes_FromStringAndSize(<char *>self.prefix, text_len)))
                self.line_patterns.append(pattern)
            memset(self.found, 0, self.nneedles)
        elif self.nneedles > self.npat:
            memset(self.found + self.npat, 0, self.nneedles - self.npat)
        self.prefix_len = 0
        self.line_length = 0
        self.tail_len = 0

    # ---- the region of complete lines ------------------------------------------

    cdef inline bint verify(self, Py_ssize_t p, int k, Py_ssize_t end) noexcept:
        cdef Py_ssize_t m = self.needle_len[k], i
        cdef const unsigned char *needle = self.needle_data + self.needle_off[k]
        if p + m > end:
            return False
        for i in range(m):
            if hk_lower_table[self.buf[p + i]] != needle[i]:
                return False
        return True

    cdef long long region(self, Py_ssize_t rs, Py_ssize_t re, long long lineno) except -1:
        """Scan buf[rs:re], whole lines ending in \\n; returns the next line number."""
        cdef const unsigned char *buf = self.buf
        cdef Py_ssize_t q = rs, line_from = rs, j, jend, p, ls, le, slot
        cdef Py_ssize_t nfilt = self.filt.n3 + self.filt.n2 + self.filt.n1
        cdef unsigned long long mask
        cdef const unsigned char *fb
        cdef bint hit
        if nfilt == 0:
            return lineno + hk_count_nl(buf + rs, re - rs)
        while q < re:
            q = _FILTER(buf, q, re, &self.filt, &mask)
            if q >= re:
                break
            hit = False
            jend = q + _WIDTH
            if jend > re:
                jend = re
            for j in range(q, jend):
                if not (mask >> (j - q)) & 1:
                    continue
                for slot in range(nfilt):
                    fb = self.filt_bytes + 3 * slot
                    if (buf[j] | 0x20) != fb[0]:
                        continue
                    if slot < self.filt.n3 + self.filt.n2 and (buf[j + 1] | 0x20) != fb[1]:
                        continue
                    if slot < self.filt.n3 and (buf[j + 2] | 0x20) != fb[2]:
                        continue
                    p = j - self.filt_shift[slot]
                    if p >= line_from and self.verify(p, self.filt_pattern[slot], re):
                        hit = True
                        break
                if hit:
                    break
            if not hit:
                q += _WIDTH
                continue
            ls = hk_last_nl(buf, line_from, p) + 1
            lineno += hk_count_nl(buf + line_from, ls - line_from)
            le = <Py_ssize_t>(<const unsigned char *>memchr(buf + p, 10, re - p) - buf)
            self.feed(buf + ls, le - ls)
            self.finish_line(lineno)
            lineno += 1
            line_from = le + 1
            q = line_from
        return lineno + hk_count_nl(buf + line_from, re - line_from)

    # ---- the file --------------------------------------------------------------

    cdef tuple run(self, int fd, long long offset, long long end, long long first_line,
                   bint complete):
        cdef long long pos = offset, lineno = first_line
        cdef Py_ssize_t want, n, got, first_nl, last_nl
        cdef ssize_t r = 0
        cdef const unsigned char *nl
        self.line_start = offset
        while pos < end:
            want = self.buf_size
            if end - pos < want:
                want = end - pos
            n = 0
            with nogil:
                while n < want:
                    r = pread(fd, self.buf + n, want - n, <off_t>(pos + n))
                    if r < 0:
                        if errno == EINTR:
                            continue
                        break
                    if r == 0:
                        break
                    n += r
            if n == 0:
                if r < 0:
                    raise OSError(errno, "cannot read the log")
                break    # the file shrank while we read it
            nl = <const unsigned char *>memchr(self.buf, 10, n)
            if nl == NULL:
                self.feed(self.buf, n)
                pos += n
                continue
            first_nl = nl - self.buf
            self.feed(self.buf, first_nl)
            self.finish_line(lineno)
            lineno += 1
            last_nl = hk_last_nl(self.buf, first_nl, n)
            if last_nl > first_nl:
                lineno = self.region(first_nl + 1, last_nl + 1, lineno)
            self.line_start = pos + last_nl + 1
            self.feed(self.buf + last_nl + 1, n - last_nl - 1)
            pos += n
        if self.line_length > 0:
            if complete:
                self.finish_line(lineno)
                lineno += 1
            else:
                pos = self.line_start
        return (self.errors, self.excused, self.lines, self.line_patterns, pos, lineno)


def scan_fd(int fd, long long offset, long long end, long long first_line, tuple patterns,
            tuple whitelist, tuple needed, bint complete, Py_ssize_t max_lines,
            Py_ssize_t max_text, Py_ssize_t chunk_size):
    """Scan the open file ``fd`` from byte ``offset`` (a line start) to byte ``end``.

    Arguments arrive normalised by the facade: ``patterns`` are non-empty, ASCII
    lower-cased bytes without line breaks; ``whitelist`` holds one tuple of distinct
    lower-cased word bytes per entry and ``needed`` how many of them excuse a line.

    Returns ``(errors, excused, lines, pattern_indices, end_offset, end_line)`` where
    ``lines`` are ``(line_number, raw_text_prefix)`` of the first ``max_lines``
    unexcused error lines and ``pattern_indices`` the first pattern (in order) each
    contains.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    cdef _Scanner scanner = _Scanner()
    cdef long long size = end - offset
    cdef Py_ssize_t buf_size = chunk_size
    if size < buf_size:
        buf_size = max(size, 1)
    scanner.setup(patterns, whitelist, needed, max_lines, max_text, buf_size)
    return scanner.run(fd, offset, end, first_line, complete)
