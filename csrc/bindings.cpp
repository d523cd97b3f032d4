// The single pybind11 module of megatron_prealign: numpy in/out around the pure C++ kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <utility>
#include <vector>

#include "codeswitch.h"
#include "lexicon_scan.h"

namespace py = pybind11;

namespace {

// dtype equivalence (numpy's PyArray_EquivTypes), not object identity: equal dtypes created
// separately (e.g. after unpickling) are distinct objects.
template <typename T>
bool HasDtype(const py::array& arr) {
  return py::isinstance<py::array_t<T>>(arr);
}

template <typename T>
std::vector<T> ToVector(const py::array& arr, const char* name) {
  if (arr.ndim() != 1) throw py::value_error(std::string(name) + " must be 1-D");
  if (!HasDtype<T>(arr))
    throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(arr.dtype())) +
                         ", expected " + std::string(py::str(py::dtype::of<T>())));
  // forcecast only to obtain a contiguous buffer; the dtype was checked above.
  auto c = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(arr);
  if (!c) throw py::error_already_set();
  return std::vector<T>(c.data(), c.data() + c.size());
}

// Hands the vector's buffer to numpy without copying: the capsule owns it from here on.
template <typename T>
py::array_t<T> ToNumpy(std::vector<T>&& v) {
  // Scan reserves one slot per token; a caller that keeps many sparse results alive should pay
  // for the matches, not for that reservation.
  if (v.capacity() > 2 * v.size() + 4096) v.shrink_to_fit();
  auto* owned = new std::vector<T>(std::move(v));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(static_cast<py::ssize_t>(owned->size()), owned->data(), free_when_done);
}

// Runs f() with the GIL released. A std::invalid_argument from the kernel becomes a ValueError
// once the GIL is held again (raising a Python exception needs it).
template <typename F>
auto WithoutGil(F&& f) -> decltype(f()) {
  std::string error;
  {
    py::gil_scoped_release release;
    try {
      return f();
    } catch (const std::invalid_argument& e) {
      error = e.what();
    }
  }
  throw py::value_error(error);
}

prealign::ScanMode CheckedScanMode(int mode) {
  if (mode != static_cast<int>(prealign::ScanMode::kWord) &&
      mode != static_cast<int>(prealign::ScanMode::kLongestMatch))
    throw py::value_error("mode must be 0 (word) or 1 (longest-match), got " + std::to_string(mode));
  return static_cast<prealign::ScanMode>(mode);
}

template <typename T, typename Run>
void RunOnContiguous(const py::array& tokens, Run& run) {
  // Zero-copy for the usual C-contiguous input; a strided view is copied once.
  auto contiguous = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(tokens);
  if (!contiguous) throw py::error_already_set();
  run(contiguous.data(), static_cast<int64_t>(contiguous.size()));
}

// Calls run(const T* data, int64_t n) on the scan input, T its element type (int32 or uint16).
template <typename Run>
void WithScanTokens(const py::array& tokens, Run&& run) {
  if (tokens.ndim() != 1)
    throw py::value_error("tokens must be 1-D, got " + std::to_string(tokens.ndim()) + " dimensions");
  if (HasDtype<int32_t>(tokens)) return RunOnContiguous<int32_t>(tokens, run);
  if (HasDtype<uint16_t>(tokens)) return RunOnContiguous<uint16_t>(tokens, run);
  throw py::type_error("tokens must have dtype int32 or uint16, got " +
                       std::string(py::str(tokens.dtype())) + "; cast it first");
}

py::tuple Scan(const prealign::LexiconTrie& trie, const py::array& tokens, int mode) {
  const auto smode = CheckedScanMode(mode);
  prealign::ScanResult result;
  WithScanTokens(tokens, [&](const auto* data, int64_t n) {
    WithoutGil([&] { trie.Scan(data, n, smode, &result); });
  });
  return py::make_tuple(ToNumpy(std::move(result.starts)), ToNumpy(std::move(result.lengths)),
                        ToNumpy(std::move(result.entries)));
}

py::tuple ScanDocuments(const prealign::LexiconTrie& trie, const py::array& tokens,
                        const py::array& doc_lengths, int mode) {
  const auto smode = CheckedScanMode(mode);
  const std::vector<int64_t> lengths = ToVector<int64_t>(doc_lengths, "doc_lengths");
  std::vector<int32_t> triples;
  std::vector<int64_t> values;
  int64_t covered = 0;
  WithScanTokens(tokens, [&](const auto* data, int64_t n) {
    covered = WithoutGil([&] {
      return trie.ScanDocuments(data, n, lengths.data(), static_cast<int64_t>(lengths.size()),
                                smode, &triples, &values);
    });
  });
  return py::make_tuple(ToNumpy(std::move(triples)), ToNumpy(std::move(values)), covered);
}

// A C-contiguous array of exactly dtype T, without a copy; anything else is a ValueError naming
// the argument (no silent casts on the per-sample path).
template <typename T>
py::array_t<T, py::array::c_style> ExactArray(const py::array& arr, const char* name) {
  if (arr.ndim() != 1)
    throw py::value_error(std::string(name) + " must be 1-D, got " + std::to_string(arr.ndim()) +
                          " dimensions");
  if (!HasDtype<T>(arr))
    throw py::value_error(std::string(name) + " has dtype " + std::string(py::str(arr.dtype())) +
                          ", expected " + std::string(py::str(py::dtype::of<T>())));
  if (!(arr.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous");
  return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(arr);
}

template <typename Tok, typename Span>
prealign::CodeSwitchCounts RunCodeSwitch(const py::array& window, int64_t valid_length,
                                         const py::array& starts, const py::array& lengths,
                                         const py::array& entries,
                                         const prealign::CodeSwitchLexicon& lexicon, double ratio,
                                         uint64_t seed, uint64_t sample_index, int64_t seq_length,
                                         int64_t pad_id, int64_t* tokens, int64_t* labels,
                                         float* loss_mask) {
  auto w = ExactArray<Tok>(window, "window_tokens");
  auto s = ExactArray<Span>(starts, "span starts");
  auto l = ExactArray<Span>(lengths, "span lengths");
  auto e = ExactArray<Span>(entries, "span entry_ids");
  if (l.size() != s.size() || e.size() != s.size())
    throw py::value_error("span starts, lengths and entry_ids must be 1-D arrays of equal length");
  return WithoutGil([&] {
    return prealign::ApplyCodeSwitch<Tok, Span>(w.data(), w.size(), valid_length, s.data(),
                                                l.data(), e.data(), s.size(), lexicon, ratio, seed,
                                                sample_index, seq_length, pad_id, tokens, labels,
                                                loss_mask);
  });
}

template <typename Tok>
prealign::CodeSwitchCounts DispatchSpans(const py::array& window, int64_t valid_length,
                                         const py::array& starts, const py::array& lengths,
                                         const py::array& entries,
                                         const prealign::CodeSwitchLexicon& lexicon, double ratio,
                                         uint64_t seed, uint64_t sample_index, int64_t seq_length,
                                         int64_t pad_id, int64_t* tokens, int64_t* labels,
                                         float* loss_mask) {
  if (HasDtype<int32_t>(starts))
    return RunCodeSwitch<Tok, int32_t>(window, valid_length, starts, lengths, entries, lexicon,
                                       ratio, seed, sample_index, seq_length, pad_id, tokens,
                                       labels, loss_mask);
  if (HasDtype<int64_t>(starts))
    return RunCodeSwitch<Tok, int64_t>(window, valid_length, starts, lengths, entries, lexicon,
                                       ratio, seed, sample_index, seq_length, pad_id, tokens,
                                       labels, loss_mask);
  throw py::value_error("span arrays must all have dtype int32 or all int64, got " +
                        std::string(py::str(starts.dtype())));
}

// The lexicon arrays of apply_codeswitch/codeswitch_sample, borrowed from the caller's arrays
// (which outlive the call).
prealign::CodeSwitchLexicon BorrowLexicon(const py::array& entry_offsets,
                                          const py::array& entry_flat,
                                          const py::array& translation_offsets,
                                          const py::array& translation_flat) {
  auto eo = ExactArray<int64_t>(entry_offsets, "entry_offsets");
  auto ef = ExactArray<int32_t>(entry_flat, "entry_flat");
  auto to = ExactArray<int64_t>(translation_offsets, "translation_offsets");
  auto tf = ExactArray<int32_t>(translation_flat, "translation_flat");
  if (eo.size() < 1 || to.size() != eo.size())
    throw py::value_error("lexicon entry_offsets and translation_offsets must both have "
                          "num_entries + 1 >= 1 items");
  return prealign::CodeSwitchLexicon{eo.data(), ef.data(), to.data(), tf.data(),
                                     eo.size() - 1, ef.size(), tf.size()};
}

// The three per-sample outputs, and the Python result tuple built from them.
struct SampleOutputs {
  explicit SampleOutputs(int64_t seq_length)
      : tokens(Checked(seq_length)), labels(seq_length), loss_mask(seq_length) {}
  static int64_t Checked(int64_t seq_length) {
    if (seq_length < 0) throw py::value_error("seq_length must be non-negative");
    return seq_length;
  }
  py::tuple Result(const prealign::CodeSwitchCounts& c) const {
    return py::make_tuple(tokens, labels, loss_mask,
                          py::make_tuple(c.switched_words, c.eligible_words, c.switched_tokens));
  }
  py::array_t<int64_t> tokens, labels;
  py::array_t<float> loss_mask;
};

// Calls run(Tok{}) with Tok the window's element type (int64, int32 or uint16).
template <typename Run>
prealign::CodeSwitchCounts DispatchWindow(const py::array& window, Run&& run) {
  if (HasDtype<int64_t>(window)) return run(int64_t{});
  if (HasDtype<int32_t>(window)) return run(int32_t{});
  if (HasDtype<uint16_t>(window)) return run(uint16_t{});
  throw py::value_error("window_tokens must have dtype int64, int32 or uint16, got " +
                        std::string(py::str(window.dtype())));
}

py::tuple ApplyCodeSwitch(const py::array& window, const py::array& starts,
                          const py::array& lengths, const py::array& entries,
                          const py::array& entry_offsets, const py::array& entry_flat,
                          const py::array& translation_offsets, const py::array& translation_flat,
                          double ratio, uint64_t seed, uint64_t sample_index, int64_t seq_length,
                          int64_t pad_id, int64_t valid_length) {
  const auto lexicon = BorrowLexicon(entry_offsets, entry_flat, translation_offsets, translation_flat);
  SampleOutputs out(seq_length);
  int64_t* t = out.tokens.mutable_data();
  int64_t* l = out.labels.mutable_data();
  float* m = out.loss_mask.mutable_data();
  return out.Result(DispatchWindow(window, [&](auto tok) {
    return DispatchSpans<decltype(tok)>(window, valid_length, starts, lengths, entries, lexicon,
                                        ratio, seed, sample_index, seq_length, pad_id, t, l, m);
  }));
}

// The code-switch sidecar arrays of window_spans/codeswitch_sample, borrowed from the caller,
// and GPTDataset's document walk over them (prealign::WindowSpans).
struct SidecarView {
  SidecarView(const py::array& doc_lengths_arr, const py::array& values_arr,
              const py::array& pointers_arr, const py::array& flat_arr)
      : doc_lengths(ExactArray<int32_t>(doc_lengths_arr, "doc_lengths")),
        values(ExactArray<int32_t>(values_arr, "sidecar_values")),
        pointers(ExactArray<int64_t>(pointers_arr, "sidecar_pointers")),
        flat(ExactArray<int32_t>(flat_arr, "sidecar_flat")) {
    if (values.size() != doc_lengths.size() || pointers.size() != doc_lengths.size())
      throw py::value_error("doc_lengths, sidecar_values and sidecar_pointers must have one item "
                            "per document");
  }

  // Call without the GIL; throws std::invalid_argument (see prealign::WindowSpans).
  template <typename DocIndex>
  int64_t Walk(const py::array_t<DocIndex, py::array::c_style>& document_index, int64_t doc_begin,
               int64_t offset_begin, int64_t doc_end, int64_t offset_end, int64_t extra_token,
               int64_t window_size, std::vector<int32_t>* starts, std::vector<int32_t>* lengths,
               std::vector<int32_t>* entries) const {
    return prealign::WindowSpans<DocIndex>(
        document_index.data(), document_index.size(), doc_begin, offset_begin, doc_end,
        offset_end, extra_token, window_size, doc_lengths.data(), doc_lengths.size(),
        values.data(), pointers.data(), flat.data(), flat.size(), starts, lengths, entries);
  }

  py::array_t<int32_t, py::array::c_style> doc_lengths, values;
  py::array_t<int64_t, py::array::c_style> pointers;
  py::array_t<int32_t, py::array::c_style> flat;
};

// Calls run(DocIndex{}) with DocIndex the document index's element type (int32 or int64).
template <typename Run>
auto DispatchDocIndex(const py::array& document_index, Run&& run) -> decltype(run(int64_t{})) {
  if (HasDtype<int64_t>(document_index)) return run(int64_t{});
  if (HasDtype<int32_t>(document_index)) return run(int32_t{});
  throw py::value_error("document_index must have dtype int32 or int64, got " +
                        std::string(py::str(document_index.dtype())));
}

py::tuple WindowSpans(const py::array& document_index, int64_t doc_begin, int64_t offset_begin,
                      int64_t doc_end, int64_t offset_end, int64_t extra_token,
                      int64_t window_size, const py::array& doc_lengths,
                      const py::array& sidecar_values, const py::array& sidecar_pointers,
                      const py::array& sidecar_flat) {
  return DispatchDocIndex(document_index, [&](auto index_type) {
    auto di = ExactArray<decltype(index_type)>(document_index, "document_index");
    const SidecarView sidecar(doc_lengths, sidecar_values, sidecar_pointers, sidecar_flat);
    std::vector<int32_t> starts, lengths, entries;
    const int64_t valid = WithoutGil([&] {
      return sidecar.Walk(di, doc_begin, offset_begin, doc_end, offset_end, extra_token,
                          window_size, &starts, &lengths, &entries);
    });
    return py::make_tuple(ToNumpy(std::move(starts)), ToNumpy(std::move(lengths)),
                          ToNumpy(std::move(entries)), valid);
  });
}

// One whole sample: the window's sidecar spans (WindowSpans), the switch (ApplyCodeSwitch) and
// GPTDataset's pad handling (MaskPadLikeGPTDataset), without returning to Python in between.
template <typename Tok, typename DocIndex>
prealign::CodeSwitchCounts RunSample(const py::array& window, int64_t window_size,
                                     const py::array& document_index, int64_t doc_begin,
                                     int64_t offset_begin, int64_t doc_end, int64_t offset_end,
                                     int64_t extra_token, const SidecarView& sidecar,
                                     const prealign::CodeSwitchLexicon& lexicon, double ratio,
                                     uint64_t seed, uint64_t sample_index, int64_t seq_length,
                                     int64_t pad_id, int64_t* tokens, int64_t* labels,
                                     float* loss_mask) {
  auto w = ExactArray<Tok>(window, "window_tokens");
  auto di = ExactArray<DocIndex>(document_index, "document_index");
  if (window_size < 0 || window_size > w.size())
    throw py::value_error("window_size must be in [0, len(window_tokens)]");
  // Reused per thread: a sample's span count is bounded by its length, so after the first few
  // samples no allocation happens here.
  thread_local std::vector<int32_t> starts, lengths, entries;
  starts.clear(), lengths.clear(), entries.clear();
  return WithoutGil([&] {
    const int64_t valid = sidecar.Walk(di, doc_begin, offset_begin, doc_end, offset_end,
                                       extra_token, window_size, &starts, &lengths, &entries);
    const auto counts = prealign::ApplyCodeSwitch<Tok, int32_t>(
        w.data(), w.size(), valid, starts.data(), lengths.data(), entries.data(),
        static_cast<int64_t>(starts.size()), lexicon, ratio, seed, sample_index, seq_length,
        pad_id, tokens, labels, loss_mask);
    prealign::MaskPadLikeGPTDataset(tokens, labels, loss_mask, seq_length, pad_id);
    return counts;
  });
}

py::tuple CodeSwitchSample(const py::array& window, int64_t window_size,
                           const py::array& document_index, int64_t doc_begin,
                           int64_t offset_begin, int64_t doc_end, int64_t offset_end,
                           int64_t extra_token, const py::array& doc_lengths,
                           const py::array& sidecar_values, const py::array& sidecar_pointers,
                           const py::array& sidecar_flat, const py::array& entry_offsets,
                           const py::array& entry_flat, const py::array& translation_offsets,
                           const py::array& translation_flat, double ratio, uint64_t seed,
                           uint64_t sample_index, int64_t seq_length, int64_t pad_id) {
  const auto lexicon = BorrowLexicon(entry_offsets, entry_flat, translation_offsets, translation_flat);
  SampleOutputs out(seq_length);
  int64_t* t = out.tokens.mutable_data();
  int64_t* l = out.labels.mutable_data();
  float* m = out.loss_mask.mutable_data();
  return out.Result(DispatchWindow(window, [&](auto tok) {
    return DispatchDocIndex(document_index, [&](auto index_type) {
      const SidecarView sidecar(doc_lengths, sidecar_values, sidecar_pointers, sidecar_flat);
      return RunSample<decltype(tok), decltype(index_type)>(
          window, window_size, document_index, doc_begin, offset_begin, doc_end, offset_end,
          extra_token, sidecar, lexicon, ratio, seed, sample_index, seq_length, pad_id, t, l, m);
    });
  }));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "Compiled kernels of megatron_prealign (built by `pip install -e .`).";

  py::class_<prealign::LexiconTrie>(m, "LexiconTrie",
                                    "Token-id trie (CSR arrays) plus the token-class table.")
      .def(py::init([](const py::array& child_offsets, const py::array& child_tokens,
                       const py::array& child_nodes, const py::array& node_entry,
                       const py::array& token_classes) {
             try {
               return new prealign::LexiconTrie(
                   ToVector<int64_t>(child_offsets, "child_offsets"),
                   ToVector<int32_t>(child_tokens, "child_tokens"),
                   ToVector<int32_t>(child_nodes, "child_nodes"),
                   ToVector<int32_t>(node_entry, "node_entry"),
                   ToVector<uint8_t>(token_classes, "token_classes"));
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("child_offsets"), py::arg("child_tokens"), py::arg("child_nodes"),
           py::arg("node_entry"), py::arg("token_classes"))
      .def_property_readonly("num_nodes", &prealign::LexiconTrie::num_nodes)
      .def("scan", &Scan, py::arg("tokens"), py::arg("mode"),
           "scan(tokens: int32|uint16 1-D array, mode: 0 word | 1 longest-match)"
           " -> (starts int64, lengths int32, entry_ids int32). Releases the GIL.")
      .def("scan_documents", &ScanDocuments, py::arg("tokens"), py::arg("doc_lengths"),
           py::arg("mode"),
           "scan_documents(tokens: int32|uint16 1-D, doc_lengths: int64 (D,), mode) ->"
           " (triples int32 (3S,) (start within its document, length, entry id),"
           " values_per_document int64 (D,) = 3 x matches, covered tokens): scan() per document"
           " in one call, in the code-switch sidecar's layout. Releases the GIL.");

  m.def("apply_codeswitch", &ApplyCodeSwitch, py::arg("window_tokens"), py::arg("starts"),
        py::arg("lengths"), py::arg("entry_ids"), py::arg("entry_offsets"), py::arg("entry_flat"),
        py::arg("translation_offsets"), py::arg("translation_flat"), py::arg("ratio"),
        py::arg("seed"), py::arg("sample_index"), py::arg("seq_length"), py::arg("pad_id"),
        py::arg("valid_length"),
        "apply_codeswitch(window int64|int32|uint16 (L,), starts, lengths, entry_ids (int32 or"
        " int64 (S,), one dtype), lexicon arrays (int64, int32, int64, int32), ratio, seed"
        " (uint64), sample_index, seq_length, pad_id, valid_length) -> (tokens int64,"
        " labels int64, loss_mask float32, (switched_words, eligible_words, switched_tokens))."
        " Arrays are read in place (C-contiguous, exact dtypes, else ValueError); releases the"
        " GIL. Semantics: megatron_prealign.data.codeswitch.apply_codeswitch.");

  m.def("window_spans", &WindowSpans, py::arg("document_index"), py::arg("doc_begin"),
        py::arg("offset_begin"), py::arg("doc_end"), py::arg("offset_end"),
        py::arg("extra_token"), py::arg("window_size"), py::arg("doc_lengths"),
        py::arg("sidecar_values"), py::arg("sidecar_pointers"), py::arg("sidecar_flat"),
        "window_spans(document_index int32|int64, doc_begin, offset_begin, doc_end, offset_end,"
        " extra_token, window_size, doc_lengths int32 (D,), sidecar_values int32 (D,),"
        " sidecar_pointers int64 (D,) byte offsets, sidecar_flat int32 (whole .bin)) ->"
        " (starts, lengths, entry_ids int32 (S,), valid_length): the sidecar spans of one"
        " GPTDataset sample window, in window coordinates. ValueError on bad input; releases"
        " the GIL.");

  m.def("codeswitch_sample", &CodeSwitchSample, py::arg("window_tokens"), py::arg("window_size"),
        py::arg("document_index"), py::arg("doc_begin"), py::arg("offset_begin"),
        py::arg("doc_end"), py::arg("offset_end"), py::arg("extra_token"),
        py::arg("doc_lengths"), py::arg("sidecar_values"), py::arg("sidecar_pointers"),
        py::arg("sidecar_flat"), py::arg("entry_offsets"), py::arg("entry_flat"),
        py::arg("translation_offsets"), py::arg("translation_flat"), py::arg("ratio"),
        py::arg("seed"), py::arg("sample_index"), py::arg("seq_length"), py::arg("pad_id"),
        "codeswitch_sample(window int64|int32|uint16 (L,), window_size, <window_spans' walk and"
        " sidecar arguments>, <apply_codeswitch's lexicon arrays>, ratio, seed, sample_index,"
        " seq_length, pad_id) -> (tokens int64, labels int64, loss_mask float32, (switched_words,"
        " eligible_words, switched_tokens)): window_spans + apply_codeswitch + GPTDataset's pad"
        " handling (no loss where the label is pad; pad ids -> 0) in one call. The loss mask is"
        " that of a GPTDataset whose masks are cacheable (no resets, no eod masking). ValueError on"
        " bad input; releases the GIL.");
}
