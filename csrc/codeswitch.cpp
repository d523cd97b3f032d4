#include "codeswitch.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace prealign {

namespace {

[[noreturn]] void Invalid(const std::string& what) { throw std::invalid_argument(what); }

// Appends (token, label, mask) rows to the output, dropping those past seq_length; `count` keeps
// the length of the full switched stream.
struct Writer {
  int64_t* tokens;
  int64_t* labels;
  float* mask;
  int64_t seq_length;
  int64_t count = 0;

  void Put(int64_t token, int64_t label, float m) {
    if (count < seq_length) {
      tokens[count] = token;
      labels[count] = label;
      mask[count] = m;
    }
    ++count;
  }

  // Unswitched original tokens x[lo:hi]: each predicts the token after it.
  void Kept(const int64_t* x, int64_t lo, int64_t hi) {
    const int64_t end = std::min(hi, lo + std::max<int64_t>(0, seq_length - count));
    for (int64_t i = lo; i < end; ++i) {
      tokens[count] = x[i];
      labels[count] = x[i + 1];
      mask[count] = 1.0f;
      ++count;
    }
    count += hi - end;
  }
};

}  // namespace

CodeSwitchCounts ApplyCodeSwitch(const int64_t* window, int64_t window_length,
                                 int64_t valid_length, const int32_t* starts,
                                 const int32_t* lengths, const int32_t* entries,
                                 int64_t num_spans, const CodeSwitchLexicon& lexicon, double ratio,
                                 uint64_t seed, uint64_t sample_index, int64_t seq_length,
                                 int64_t pad_id, int64_t* tokens, int64_t* labels,
                                 float* loss_mask) {
  const int64_t L = window_length;
  if (L < 2) Invalid("window_tokens must be 1-D with at least 2 tokens, got " + std::to_string(L));
  if (valid_length < 0 || valid_length > L)
    Invalid("valid_length must be in [0, " + std::to_string(L) + "], got " +
            std::to_string(valid_length));
  for (int64_t s = 0; s < num_spans; ++s) {
    if (static_cast<int64_t>(lengths[s]) <= 0) Invalid("switch spans must have positive lengths");
    if (s > 0 && static_cast<int64_t>(starts[s]) - static_cast<int64_t>(starts[s - 1]) -
                         static_cast<int64_t>(lengths[s - 1]) <
                     0)
      Invalid("switch spans must be sorted by start and must not overlap");
    if (static_cast<int64_t>(entries[s]) < 0 ||
        static_cast<int64_t>(entries[s]) >= lexicon.num_entries)
      Invalid("switch span entry id " + std::to_string(static_cast<int64_t>(entries[s])) +
              " is outside [0, " + std::to_string(lexicon.num_entries) + ")");
  }

  // u < ratio for u = m * 2**-53  <=>  m < ceil(ratio * 2**53) (exact in floating point).
  const uint64_t threshold = static_cast<uint64_t>(std::ceil(ratio * 9007199254740992.0));
  const uint64_t key = SampleKey(seed, sample_index);
  const int64_t last_input = valid_length - 1;  // a switched word must end at or before it

  CodeSwitchCounts counts;
  Writer out{tokens, labels, loss_mask, seq_length};
  int64_t kept_from = 0;  // first original token not yet written
  for (int64_t s = 0; s < num_spans; ++s) {
    const int64_t a = static_cast<int64_t>(starts[s]);
    const int64_t m = static_cast<int64_t>(lengths[s]);
    if (a < 0) continue;
    if (a + m > last_input) break;  // sorted and disjoint: no later span is inside either
    const int64_t e = static_cast<int64_t>(entries[s]);
    const int64_t t_lo = lexicon.translation_offsets[e];
    const int64_t t_hi = lexicon.translation_offsets[e + 1];
    if (t_lo < 0 || t_hi < t_lo || t_hi > lexicon.translation_flat_size)
      Invalid("lexicon translation_offsets are not a valid offsets array");
    if (t_hi == t_lo) continue;  // nothing to switch to
    ++counts.eligible_words;
    const uint64_t h = SplitMix64(key ^ static_cast<uint64_t>(a));
    if ((h >> 11) >= threshold) continue;
    const int64_t pick = static_cast<int64_t>((h & 0xFFFFFFFFULL) % static_cast<uint64_t>(t_hi - t_lo));
    const int64_t target = lexicon.translation_flat[t_lo + pick];
    if (target < 0 || target >= lexicon.num_entries)
      Invalid("lexicon translation ids fall outside [0, num_entries)");
    const int64_t e_lo = lexicon.entry_offsets[target];
    const int64_t e_hi = lexicon.entry_offsets[target + 1];
    if (e_lo < 0 || e_hi <= e_lo || e_hi > lexicon.entry_flat_size)
      Invalid("lexicon entry_offsets are not a valid offsets array");

    // Kept tokens before the word (the last of them predicts w1 = x[a]), then t1..tk.
    out.Kept(window, kept_from, a);
    const int32_t* t = lexicon.entry_flat + e_lo;
    const int64_t k = e_hi - e_lo;
    for (int64_t j = 0; j + 1 < k; ++j) out.Put(t[j], t[j + 1], 0.0f);
    out.Put(t[k - 1], window[a + m], 1.0f);
    kept_from = a + m;
    ++counts.switched_words;
    counts.switched_tokens += k;
  }
  out.Kept(window, kept_from, L - 1);
  // Switching shortened the stream: pad the tail, without a target.
  for (int64_t q = out.count; q < seq_length; ++q) {
    tokens[q] = pad_id;
    labels[q] = pad_id;
    loss_mask[q] = 0.0f;
  }
  return counts;
}


namespace {

// Document doc's `count` span triples (count > 0): a view of the memory-mapped .bin, or read
// into *buffer with pread() (whose file offset is its own, so forked DataLoader workers may
// share the descriptor).
const int32_t* DocumentTriples(const SidecarSpans& sidecar, int64_t doc, int64_t count,
                               std::vector<int32_t>* buffer) {
  const int64_t pointer = sidecar.pointers[doc];
  if (pointer < 0 || pointer % 4 != 0)
    Invalid("sidecar pointer of document " + std::to_string(doc) + " out of range");
  if (sidecar.fd < 0) {
    if (pointer / 4 + 3 * count > sidecar.flat_size)
      Invalid("sidecar pointer of document " + std::to_string(doc) + " out of range");
    return sidecar.flat + pointer / 4;
  }
  buffer->resize(static_cast<size_t>(3 * count));
  char* dst = reinterpret_cast<char*>(buffer->data());
  const int64_t size = 12 * count;
  for (int64_t done = 0; done < size;) {
    const ssize_t got = pread(sidecar.fd, dst + done, static_cast<size_t>(size - done),
                              static_cast<off_t>(pointer + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0)
      Invalid("reading the spans of document " + std::to_string(doc) + ": " +
              std::strerror(errno));
    if (got == 0)
      Invalid("sidecar pointer of document " + std::to_string(doc) +
              " out of range (the .bin ends before its spans)");
    done += got;
  }
  return buffer->data();
}

}  // namespace

template <typename DocIndex>
int64_t WindowSpans(const DocIndex* document_index, int64_t document_index_size,
                    int64_t doc_begin, int64_t offset_begin, int64_t doc_end, int64_t offset_end,
                    int64_t extra_token, int64_t window_size, const SidecarSpans& sidecar,
                    std::vector<int32_t>* starts, std::vector<int32_t>* lengths,
                    std::vector<int32_t>* entries) {
  if (doc_begin < 0 || doc_end < doc_begin || doc_end >= document_index_size)
    Invalid("sample_index points outside document_index");
  thread_local std::vector<int32_t> buffer;
  int64_t pos = 0, valid = 0;
  for (int64_t i = doc_begin; i <= doc_end; ++i) {
    const int64_t doc = static_cast<int64_t>(document_index[i]);
    if (doc < 0 || doc >= sidecar.num_docs)
      Invalid("document id " + std::to_string(doc) + " out of range");
    const int64_t lo = (i == doc_begin) ? offset_begin : 0;
    const int64_t doc_len = sidecar.doc_lengths[doc];
    const int64_t available = doc_len - lo;
    const int64_t requested = (i == doc_end) ? offset_end + extra_token - lo : available;
    const int64_t n_tokens = std::max<int64_t>(0, std::min(requested, available));
    const int64_t part_pos = pos;
    pos += requested;
    valid = part_pos + n_tokens;

    const int64_t count = static_cast<int64_t>(sidecar.values[doc]) / 3;
    if (count <= 0) continue;
    const int32_t* t = DocumentTriples(sidecar, doc, count, &buffer);  // (count, 3)
    const int64_t last_end = int64_t{t[3 * (count - 1)]} + t[3 * (count - 1) + 1];
    if (last_end > doc_len)
      Invalid("span (" + std::to_string(t[3 * (count - 1)]) + ", " +
              std::to_string(t[3 * (count - 1) + 1]) + ", " + std::to_string(t[3 * (count - 1) + 2]) +
              ") of document " + std::to_string(doc) + " ends after its " +
              std::to_string(doc_len) + " tokens");
    // First span whose start is >= position (starts are sorted).
    auto first_at_or_after = [t, count](int64_t position) {
      int64_t a = 0, b = count;
      while (a < b) {
        const int64_t mid = a + (b - a) / 2;
        if (t[3 * mid] < position) a = mid + 1; else b = mid;
      }
      return a;
    };
    const int64_t hi = lo + n_tokens;
    const int64_t first = lo > 0 ? first_at_or_after(lo) : 0;
    int64_t stop = count;
    if (hi < doc_len) {
      stop = first_at_or_after(hi);
      if (stop > first && int64_t{t[3 * (stop - 1)]} + t[3 * (stop - 1) + 1] > hi) --stop;
    }
    const int64_t shift = part_pos - lo;
    for (int64_t s = first; s < stop; ++s) {
      starts->push_back(static_cast<int32_t>(t[3 * s] + shift));
      lengths->push_back(t[3 * s + 1]);
      entries->push_back(t[3 * s + 2]);
    }
  }
  if (pos > window_size)
    Invalid("document walk yields " + std::to_string(pos) + " tokens, the window has " +
            std::to_string(window_size));
  return valid;
}

#define PREALIGN_INSTANTIATE(DocIndex)                                                          \
  template int64_t WindowSpans<DocIndex>(const DocIndex*, int64_t, int64_t, int64_t, int64_t, \
                                         int64_t, int64_t, int64_t, const SidecarSpans&,      \
                                         std::vector<int32_t>*, std::vector<int32_t>*,        \
                                         std::vector<int32_t>*);
PREALIGN_INSTANTIATE(int32_t)
PREALIGN_INSTANTIATE(int64_t)
#undef PREALIGN_INSTANTIATE

void MaskPadLikeGPTDataset(int64_t* tokens, int64_t* labels, float* loss_mask, int64_t n,
                           int64_t pad_id) {
  for (int64_t i = 0; i < n; ++i) {
    if (labels[i] == pad_id) {
      loss_mask[i] = 0.0f;
      labels[i] = 0;
    }
    if (tokens[i] == pad_id) tokens[i] = 0;
  }
}

}  // namespace prealign
