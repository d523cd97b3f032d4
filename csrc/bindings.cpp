// The single pybind11 module of megatron_prealign: numpy in/out around the pure C++ kernels.
#include <fcntl.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "codeswitch.h"
#include "lexicon_compile.h"
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

// compile_lexicon's table builders: ragged rows as (offsets int64 (n+1,), flat int32).
py::tuple DedupeRows(const py::array& offsets, const py::array& flat) {
  auto o = ExactArray<int64_t>(offsets, "offsets");
  auto f = ExactArray<int32_t>(flat, "flat");
  if (o.size() < 1) throw py::value_error("offsets must hold at least one value");
  std::vector<int32_t> inverse;
  std::vector<int64_t> first;
  WithoutGil([&] {
    prealign::DedupeRows(o.data(), o.size() - 1, f.data(), f.size(), &inverse, &first);
  });
  return py::make_tuple(ToNumpy(std::move(inverse)), ToNumpy(std::move(first)));
}

py::array_t<int32_t> ConnectedComponents(const py::array& offsets, const py::array& flat) {
  auto o = ExactArray<int64_t>(offsets, "offsets");
  auto f = ExactArray<int32_t>(flat, "flat");
  if (o.size() < 1) throw py::value_error("offsets must hold at least one value");
  return ToNumpy(WithoutGil(
      [&] { return prealign::ConnectedComponents(o.data(), o.size() - 1, f.data(), f.size()); }));
}

py::tuple BuildTrie(const py::array& offsets, const py::array& flat, const py::array& include) {
  auto o = ExactArray<int64_t>(offsets, "offsets");
  auto f = ExactArray<int32_t>(flat, "flat");
  auto inc = ExactArray<uint8_t>(include, "include");
  if (o.size() < 1) throw py::value_error("offsets must hold at least one value");
  if (inc.size() != o.size() - 1) throw py::value_error("include must have one value per row");
  auto t = WithoutGil(
      [&] { return prealign::BuildTrie(o.data(), o.size() - 1, f.data(), f.size(), inc.data()); });
  return py::make_tuple(ToNumpy(std::move(t.child_offsets)), ToNumpy(std::move(t.child_tokens)),
                        ToNumpy(std::move(t.child_nodes)), ToNumpy(std::move(t.node_entry)));
}

// Token-id lists as the tokenizer libraries return them (a Python list of lists of ints) into
// one flat array, with `eod` (if >= 0) after every non-empty list: the per-token loop that
// numpy.fromiter would run through the iterator protocol, at C speed.
template <typename T>
py::tuple FlattenTokenLists(const py::list& rows, int64_t eod) {
  PyObject* list = rows.ptr();
  const Py_ssize_t n = PyList_GET_SIZE(list);
  std::vector<int64_t> lengths(static_cast<size_t>(n));
  size_t total = 0;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* row = PyList_GET_ITEM(list, i);
    if (!PyList_Check(row)) throw py::type_error("row " + std::to_string(i) + " is not a list");
    const Py_ssize_t m = PyList_GET_SIZE(row);
    lengths[i] = m + ((m > 0 && eod >= 0) ? 1 : 0);
    total += static_cast<size_t>(lengths[i]);
  }
  const int64_t max_id = static_cast<int64_t>(std::numeric_limits<T>::max());
  if (eod > max_id) throw py::value_error("eod " + std::to_string(eod) + " does not fit the dtype");
  std::vector<T> out(total);
  size_t k = 0;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* row = PyList_GET_ITEM(list, i);
    const Py_ssize_t m = PyList_GET_SIZE(row);
    for (Py_ssize_t j = 0; j < m; ++j) {
      const long long v = PyLong_AsLongLong(PyList_GET_ITEM(row, j));
      if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
      if (v < 0 || v > max_id)
        throw py::value_error("token id " + std::to_string(v) + " in row " + std::to_string(i) +
                              " does not fit the dtype");
      out[k++] = static_cast<T>(v);
    }
    if (m > 0 && eod >= 0) out[k++] = static_cast<T>(eod);
  }
  return py::make_tuple(ToNumpy(std::move(lengths)), ToNumpy(std::move(out)));
}

py::tuple FlattenTokens(const py::list& rows, int64_t eod, const py::dtype& dtype) {
  if (dtype.is(py::dtype::of<uint16_t>()) || dtype.equal(py::dtype::of<uint16_t>()))
    return FlattenTokenLists<uint16_t>(rows, eod);
  if (dtype.equal(py::dtype::of<int32_t>())) return FlattenTokenLists<int32_t>(rows, eod);
  throw py::type_error("dtype must be uint16 or int32, got " + std::string(py::str(dtype)));
}

// _C.CodeSwitchLexicon: the lexicon's flat arrays, held (not copied) for the object's life.
class SwitchLexicon {
 public:
  SwitchLexicon(const py::array& entry_offsets, const py::array& entry_flat,
                const py::array& translation_offsets, const py::array& translation_flat)
      : entry_offsets_(ExactArray<int64_t>(entry_offsets, "entry_offsets")),
        entry_flat_(ExactArray<int32_t>(entry_flat, "entry_flat")),
        translation_offsets_(ExactArray<int64_t>(translation_offsets, "translation_offsets")),
        translation_flat_(ExactArray<int32_t>(translation_flat, "translation_flat")) {
    if (entry_offsets_.size() < 1 || translation_offsets_.size() != entry_offsets_.size())
      throw py::value_error("lexicon entry_offsets and translation_offsets must both have "
                            "num_entries + 1 >= 1 items");
  }

  prealign::CodeSwitchLexicon View() const {
    return prealign::CodeSwitchLexicon{entry_offsets_.data(),      entry_flat_.data(),
                                       translation_offsets_.data(), translation_flat_.data(),
                                       entry_offsets_.size() - 1,   entry_flat_.size(),
                                       translation_flat_.size()};
  }

  int64_t num_entries() const { return entry_offsets_.size() - 1; }

 private:
  py::array_t<int64_t, py::array::c_style> entry_offsets_;
  py::array_t<int32_t, py::array::c_style> entry_flat_;
  py::array_t<int64_t, py::array::c_style> translation_offsets_;
  py::array_t<int32_t, py::array::c_style> translation_flat_;
};

// Calls run(DocIndex{}) with DocIndex the document index's element type (int32 or int64).
template <typename Run>
auto DispatchDocIndex(const py::array& document_index, Run&& run) -> decltype(run(int64_t{})) {
  if (HasDtype<int64_t>(document_index)) return run(int64_t{});
  if (HasDtype<int32_t>(document_index)) return run(int32_t{});
  throw py::value_error("document_index must have dtype int32 or int64, got " +
                        std::string(py::str(document_index.dtype())));
}

// _C.SidecarSpans: the code-switch sidecar of one token dataset (prealign::SidecarSpans), its
// arrays held for the object's life, and GPTDataset's document walk over it.
class Sidecar {
 public:
  // In memory: `flat` is the whole .bin as int32 (a memory map).
  Sidecar(const py::array& doc_lengths, const py::array& values, const py::array& pointers,
          const py::array& flat)
      : Sidecar(doc_lengths, values, pointers) {
    flat_ = ExactArray<int32_t>(flat, "sidecar_flat");
    in_memory_ = true;
  }

  // Read with pread() from the .bin at `bin_path` (megatron's mmap_bin_files=False).
  static std::unique_ptr<Sidecar> FromFile(const py::array& doc_lengths, const py::array& values,
                                           const py::array& pointers, const std::string& bin_path) {
    std::unique_ptr<Sidecar> sidecar(new Sidecar(doc_lengths, values, pointers));
    sidecar->fd_ = open(bin_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (sidecar->fd_ < 0)
      throw py::value_error(bin_path + ": cannot open (" + std::strerror(errno) + ")");
    return sidecar;
  }

  Sidecar(const Sidecar&) = delete;
  Sidecar& operator=(const Sidecar&) = delete;
  ~Sidecar() {
    if (fd_ >= 0) close(fd_);
  }

  prealign::SidecarSpans View() const {
    prealign::SidecarSpans view{doc_lengths_.data(), values_.data(), pointers_.data(),
                                doc_lengths_.size()};
    if (in_memory_) {
      view.flat = flat_.data();
      view.flat_size = flat_.size();
    } else {
      view.fd = fd_;
    }
    return view;
  }

  // The walk's spans and valid length, for inspection (CodeSwitcher.sample switches them).
  py::tuple WindowSpans(const py::array& document_index, int64_t doc_begin, int64_t offset_begin,
                        int64_t doc_end, int64_t offset_end, int64_t extra_token,
                        int64_t window_size) const {
    return DispatchDocIndex(document_index, [&](auto index_type) {
      using DocIndex = decltype(index_type);
      auto di = ExactArray<DocIndex>(document_index, "document_index");
      const prealign::SidecarSpans view = View();
      std::vector<int32_t> starts, lengths, entries;
      const int64_t valid = WithoutGil([&] {
        return prealign::WindowSpans<DocIndex>(di.data(), di.size(), doc_begin, offset_begin,
                                               doc_end, offset_end, extra_token, window_size, view,
                                               &starts, &lengths, &entries);
      });
      return py::make_tuple(ToNumpy(std::move(starts)), ToNumpy(std::move(lengths)),
                            ToNumpy(std::move(entries)), valid);
    });
  }

 private:
  Sidecar(const py::array& doc_lengths, const py::array& values, const py::array& pointers)
      : doc_lengths_(ExactArray<int32_t>(doc_lengths, "doc_lengths")),
        values_(ExactArray<int32_t>(values, "sidecar_values")),
        pointers_(ExactArray<int64_t>(pointers, "sidecar_pointers")) {
    if (values_.size() != doc_lengths_.size() || pointers_.size() != doc_lengths_.size())
      throw py::value_error("doc_lengths, sidecar_values and sidecar_pointers must have one item "
                            "per document");
  }

  py::array_t<int32_t, py::array::c_style> doc_lengths_, values_;
  py::array_t<int64_t, py::array::c_style> pointers_;
  py::array_t<int32_t, py::array::c_style> flat_;
  bool in_memory_ = false;  // else read from fd_
  int fd_ = -1;
};

// The three per-sample outputs, and the Python result tuple built from them.
struct SampleOutputs {
  explicit SampleOutputs(int64_t seq_length)
      : tokens(seq_length), labels(seq_length), loss_mask(seq_length) {}
  py::tuple Result(const prealign::CodeSwitchCounts& c) const {
    return py::make_tuple(tokens, labels, loss_mask,
                          py::make_tuple(c.switched_words, c.eligible_words, c.switched_tokens));
  }
  py::array_t<int64_t> tokens, labels;
  py::array_t<float> loss_mask;
};

// _C.CodeSwitcher: everything one dataset's samples share (lexicon, sidecar, GPTDataset's
// document index, ratio, seed, lengths, pad id), so a sample is one short call.
class CodeSwitcher {
 public:
  // Keeps views of the lexicon's and the sidecar's arrays: the binding keeps both objects alive
  // as long as this one (py::keep_alive).
  CodeSwitcher(const SwitchLexicon& lexicon, double ratio, uint64_t seed, int64_t seq_length,
               int64_t pad_id, const Sidecar* sidecar, const py::object& document_index,
               int64_t extra_token)
      : lexicon_(lexicon.View()),
        ratio_(ratio),
        seed_(seed),
        seq_length_(seq_length),
        pad_id_(pad_id),
        extra_token_(extra_token) {
    if (!(ratio >= 0.0 && ratio <= 1.0))
      throw py::value_error("ratio must be in [0, 1], got " + std::to_string(ratio));
    if (seq_length < 0) throw py::value_error("seq_length must be non-negative");
    if (extra_token != 0 && extra_token != 1)
      throw py::value_error("extra_token must be 0 or 1");
    if ((sidecar == nullptr) != document_index.is_none())
      throw py::value_error("sidecar and document_index go together");
    if (sidecar != nullptr) {
      sidecar_ = sidecar->View();
      has_sidecar_ = true;
      if (!py::isinstance<py::array>(document_index))
        throw py::value_error("document_index must be a numpy array");
      const auto array = document_index.cast<py::array>();
      document_index_ = DispatchDocIndex(array, [&](auto index_type) -> py::array {
        return ExactArray<decltype(index_type)>(array, "document_index");
      });
    }
  }

  // One sample: the walk over the sidecar (WindowSpans), the switch (ApplyCodeSwitch) and, with
  // map_pad, GPTDataset's pad step (MaskPadLikeGPTDataset), without returning to Python between.
  py::tuple Sample(const py::array& window, int64_t window_size, int64_t doc_begin,
                   int64_t offset_begin, int64_t doc_end, int64_t offset_end,
                   uint64_t sample_index, bool map_pad) const {
    if (!has_sidecar_) throw py::value_error("this CodeSwitcher was built without a sidecar");
    auto w = ExactArray<int64_t>(window, "window_tokens");
    if (window_size < 0 || window_size > w.size())
      throw py::value_error("window_size must be in [0, len(window_tokens)]");
    SampleOutputs out(seq_length_);
    int64_t* tokens = out.tokens.mutable_data();
    int64_t* labels = out.labels.mutable_data();
    float* loss_mask = out.loss_mask.mutable_data();
    // Reused per thread: a sample's span count is bounded by its length, so after the first few
    // samples no allocation happens here.
    thread_local std::vector<int32_t> starts, lengths, entries;
    starts.clear(), lengths.clear(), entries.clear();
    const auto counts = DispatchDocIndex(document_index_, [&](auto index_type) {
      using DocIndex = decltype(index_type);
      const auto* di = static_cast<const DocIndex*>(document_index_.data());
      const int64_t di_size = document_index_.size();
      return WithoutGil([&] {
        const int64_t valid = prealign::WindowSpans<DocIndex>(
            di, di_size, doc_begin, offset_begin, doc_end, offset_end, extra_token_, window_size,
            sidecar_, &starts, &lengths, &entries);
        const auto c = prealign::ApplyCodeSwitch(
            w.data(), w.size(), valid, starts.data(), lengths.data(), entries.data(),
            static_cast<int64_t>(starts.size()), lexicon_, ratio_, seed_, sample_index,
            seq_length_, pad_id_, tokens, labels, loss_mask);
        if (map_pad) prealign::MaskPadLikeGPTDataset(tokens, labels, loss_mask, seq_length_, pad_id_);
        return c;
      });
    });
    return out.Result(counts);
  }

  // The switch alone, on given spans (window coordinates) and valid length: no walk, no pad step.
  py::tuple Switch(const py::array& window, const py::array& starts, const py::array& lengths,
                   const py::array& entries, uint64_t sample_index, int64_t valid_length) const {
    auto w = ExactArray<int64_t>(window, "window_tokens");
    auto s = ExactArray<int32_t>(starts, "span starts");
    auto l = ExactArray<int32_t>(lengths, "span lengths");
    auto e = ExactArray<int32_t>(entries, "span entry_ids");
    if (l.size() != s.size() || e.size() != s.size())
      throw py::value_error("span starts, lengths and entry_ids must be 1-D arrays of equal length");
    SampleOutputs out(seq_length_);
    int64_t* tokens = out.tokens.mutable_data();
    int64_t* labels = out.labels.mutable_data();
    float* loss_mask = out.loss_mask.mutable_data();
    return out.Result(WithoutGil([&] {
      return prealign::ApplyCodeSwitch(w.data(), w.size(), valid_length, s.data(), l.data(),
                                       e.data(), s.size(), lexicon_, ratio_, seed_, sample_index,
                                       seq_length_, pad_id_, tokens, labels, loss_mask);
    }));
  }

  // GPTDataset's pad step, in place (for samples whose loss mask megatron builds per sample).
  void MaskPad(const py::array& tokens, const py::array& labels, const py::array& loss_mask) const {
    auto t = ExactArray<int64_t>(tokens, "tokens");
    auto l = ExactArray<int64_t>(labels, "labels");
    auto m = ExactArray<float>(loss_mask, "loss_mask");
    if (l.size() != t.size() || m.size() != t.size())
      throw py::value_error("tokens, labels and loss_mask must have the same length");
    if (!t.writeable() || !l.writeable() || !m.writeable())
      throw py::value_error("tokens, labels and loss_mask must be writeable");
    prealign::MaskPadLikeGPTDataset(t.mutable_data(), l.mutable_data(), m.mutable_data(), t.size(),
                                    pad_id_);
  }

 private:
  prealign::CodeSwitchLexicon lexicon_;
  prealign::SidecarSpans sidecar_{};
  bool has_sidecar_ = false;
  py::array document_index_;  // GPTDataset's, int32 or int64, checked
  double ratio_;
  uint64_t seed_;
  int64_t seq_length_;
  int64_t pad_id_;
  int64_t extra_token_;
};

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "Compiled kernels of megatron_prealign (built by `pip install -e .`).";

  m.def("dedupe_rows", &DedupeRows, py::arg("offsets"), py::arg("flat"),
        "dedupe_rows(offsets int64 (n+1,), flat int32) -> (inverse int32 (n,), first int64 (u,)):"
        " distinct rows in first-occurrence order. Releases the GIL.");
  m.def("connected_components", &ConnectedComponents, py::arg("offsets"), py::arg("flat"),
        "connected_components(offsets int64 (n+1,), flat int32 neighbour ids) -> int32 (n,)"
        " component per node, numbered by smallest node. Releases the GIL.");
  m.def("build_trie", &BuildTrie, py::arg("offsets"), py::arg("flat"), py::arg("include"),
        "build_trie(offsets int64 (n+1,), flat int32 tokens, include uint8 (n,)) -> (child_offsets"
        " int64, child_tokens int32, child_nodes int32, node_entry int32): the lexicon trie over"
        " the included rows, inserted in row order. Releases the GIL.");

  m.def("flatten_token_lists", &FlattenTokens, py::arg("rows"), py::arg("eod"), py::arg("dtype"),
        "flatten_token_lists(rows: list of lists of int, eod: int (-1: none), dtype: uint16|int32) ->"
        " (lengths int64 (n,), tokens): the rows back to back, eod after every non-empty row"
        " (counted in its length); an id outside the dtype is a ValueError.");

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

  py::class_<SwitchLexicon>(m, "CodeSwitchLexicon",
                            "The flat arrays of a compiled lexicon (LexiconArrays), held by reference.")
      .def(py::init<const py::array&, const py::array&, const py::array&, const py::array&>(),
           py::arg("entry_offsets"), py::arg("entry_flat"), py::arg("translation_offsets"),
           py::arg("translation_flat"),
           "CodeSwitchLexicon(entry_offsets int64 (E+1,), entry_flat int32, translation_offsets"
           " int64 (E+1,), translation_flat int32): exact dtypes, C-contiguous, else ValueError.")
      .def_property_readonly("num_entries", &SwitchLexicon::num_entries);

  py::class_<Sidecar>(m, "SidecarSpans",
                      "The code-switch sidecar of one token dataset, and GPTDataset's document"
                      " walk over it.")
      .def(py::init<const py::array&, const py::array&, const py::array&, const py::array&>(),
           py::arg("doc_lengths"), py::arg("sidecar_values"), py::arg("sidecar_pointers"),
           py::arg("sidecar_flat"),
           "SidecarSpans(doc_lengths int32 (D,) token counts, sidecar_values int32 (D,),"
           " sidecar_pointers int64 (D,) byte offsets, sidecar_flat int32 (the whole .bin, e.g."
           " memory-mapped)).")
      .def_static("from_file", &Sidecar::FromFile, py::arg("doc_lengths"),
                  py::arg("sidecar_values"), py::arg("sidecar_pointers"), py::arg("bin_path"),
                  "The same, reading each document's spans from bin_path with pread().")
      .def("window_spans", &Sidecar::WindowSpans, py::arg("document_index"), py::arg("doc_begin"),
           py::arg("offset_begin"), py::arg("doc_end"), py::arg("offset_end"),
           py::arg("extra_token"), py::arg("window_size"),
           "window_spans(document_index int32|int64, doc_begin, offset_begin, doc_end, offset_end,"
           " extra_token, window_size) -> (starts, lengths, entry_ids int32 (S,), valid_length):"
           " the spans of one GPTDataset sample window, in window coordinates. ValueError on bad"
           " input; releases the GIL.");

  py::class_<CodeSwitcher>(m, "CodeSwitcher",
                           "Input-only code-switching of one dataset's samples.")
      .def(py::init<const SwitchLexicon&, double, uint64_t, int64_t, int64_t, const Sidecar*,
                    const py::object&, int64_t>(),
           py::keep_alive<1, 2>(), py::keep_alive<1, 7>(), py::arg("lexicon"), py::arg("ratio"), py::arg("seed"), py::arg("seq_length"),
           py::arg("pad_id"), py::arg("sidecar") = py::none(),
           py::arg("document_index") = py::none(), py::arg("extra_token") = 1,
           "CodeSwitcher(lexicon: CodeSwitchLexicon, ratio in [0, 1], seed (uint64), seq_length,"
           " pad_id, sidecar: SidecarSpans | None, document_index int32|int64 | None (GPTDataset's),"
           " extra_token 0|1). Holds references to all of them.")
      .def("sample", &CodeSwitcher::Sample, py::arg("window_tokens"), py::arg("window_size"),
           py::arg("doc_begin"), py::arg("offset_begin"), py::arg("doc_end"),
           py::arg("offset_end"), py::arg("sample_index"), py::arg("map_pad") = true,
           "sample(window int64 (L,), window_size, doc_begin, offset_begin, doc_end, offset_end,"
           " sample_index, map_pad=True) -> (tokens int64, labels int64, loss_mask float32 (each"
           " seq_length,), (switched_words, eligible_words, switched_tokens)): the window's"
           " sidecar spans, switched; with map_pad, GPTDataset's pad step (no loss where the label"
           " is pad; pad ids -> 0). ValueError on bad input; releases the GIL.")
      .def("switch", &CodeSwitcher::Switch, py::arg("window_tokens"), py::arg("starts"),
           py::arg("lengths"), py::arg("entry_ids"), py::arg("sample_index"),
           py::arg("valid_length"),
           "switch(window int64 (L,), starts, lengths, entry_ids int32 (S,), sample_index,"
           " valid_length) -> as sample(map_pad=False), on the given spans (window coordinates).")
      .def("mask_pad", &CodeSwitcher::MaskPad, py::arg("tokens"), py::arg("labels"),
           py::arg("loss_mask"),
           "mask_pad(tokens int64, labels int64, loss_mask float32): GPTDataset's pad step, in"
           " place.");
}
