// The single pybind11 module of megatron_prealign: numpy in/out around the pure C++ kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <utility>
#include <vector>

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

template <typename T>
void ScanBuffer(const prealign::LexiconTrie& trie, const py::array& tokens, prealign::ScanMode mode,
                prealign::ScanResult* result) {
  // Zero-copy for the usual C-contiguous input; a strided view is copied once.
  auto contiguous = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(tokens);
  if (!contiguous) throw py::error_already_set();
  const T* data = contiguous.data();
  const int64_t n = static_cast<int64_t>(contiguous.size());
  py::gil_scoped_release release;
  trie.Scan<T>(data, n, mode, result);
}

py::tuple Scan(const prealign::LexiconTrie& trie, const py::array& tokens, int mode) {
  if (mode != static_cast<int>(prealign::ScanMode::kWord) &&
      mode != static_cast<int>(prealign::ScanMode::kLongestMatch))
    throw py::value_error("mode must be 0 (word) or 1 (longest-match), got " + std::to_string(mode));
  if (tokens.ndim() != 1)
    throw py::value_error("tokens must be 1-D, got " + std::to_string(tokens.ndim()) + " dimensions");
  prealign::ScanResult result;
  const auto smode = static_cast<prealign::ScanMode>(mode);
  if (HasDtype<int32_t>(tokens)) {
    ScanBuffer<int32_t>(trie, tokens, smode, &result);
  } else if (HasDtype<uint16_t>(tokens)) {
    ScanBuffer<uint16_t>(trie, tokens, smode, &result);
  } else {
    throw py::type_error("tokens must have dtype int32 or uint16, got " +
                         std::string(py::str(tokens.dtype())) + "; cast it first");
  }
  return py::make_tuple(ToNumpy(std::move(result.starts)), ToNumpy(std::move(result.lengths)),
                        ToNumpy(std::move(result.entries)));
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
           " -> (starts int64, lengths int32, entry_ids int32). Releases the GIL.");
}
