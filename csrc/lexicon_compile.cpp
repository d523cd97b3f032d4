#include "lexicon_compile.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>

namespace prealign {
namespace {

void CheckOffsets(const int64_t* offsets, int64_t n, int64_t flat_size) {
  if (n < 0) throw std::invalid_argument("offsets must hold at least one value");
  if (n > std::numeric_limits<int32_t>::max())
    throw std::invalid_argument("more rows than int32 ids can number");
  if (offsets[0] != 0 || offsets[n] != flat_size)
    throw std::invalid_argument("offsets must start at 0 and end at the flat array's size (" +
                                std::to_string(flat_size) + ")");
  for (int64_t i = 0; i < n; ++i)
    if (offsets[i + 1] < offsets[i])
      throw std::invalid_argument("offsets decrease at row " + std::to_string(i));
}

uint64_t Mix(uint64_t h) {
  // splitmix64's finaliser: spreads every input bit over the table index.
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  return h ^ (h >> 31);
}

uint64_t HashRow(const int32_t* row, int64_t len) {
  uint64_t h = static_cast<uint64_t>(len) * 0x9e3779b97f4a7c15ULL;
  for (int64_t k = 0; k < len; ++k) h = Mix(h ^ static_cast<uint32_t>(row[k]));
  return h;
}

// Open-addressing table size: a power of two at least twice `count`.
uint64_t TableSize(int64_t count) {
  uint64_t size = 16;
  while (size < 2 * static_cast<uint64_t>(count)) size <<= 1;
  return size;
}

}  // namespace

void DedupeRows(const int64_t* offsets, int64_t n, const int32_t* flat, int64_t flat_size,
                std::vector<int32_t>* inverse, std::vector<int64_t>* first) {
  CheckOffsets(offsets, n, flat_size);
  const uint64_t mask = TableSize(n) - 1;
  std::vector<int32_t> table(mask + 1, -1);  // distinct row number, or -1 for an empty slot
  inverse->assign(static_cast<size_t>(n), -1);
  first->clear();
  for (int64_t i = 0; i < n; ++i) {
    const int32_t* row = flat + offsets[i];
    const int64_t len = offsets[i + 1] - offsets[i];
    uint64_t slot = HashRow(row, len) & mask;
    while (true) {
      const int32_t u = table[slot];
      if (u < 0) {
        table[slot] = static_cast<int32_t>(first->size());
        (*inverse)[i] = table[slot];
        first->push_back(i);
        break;
      }
      const int64_t j = (*first)[u];
      if (offsets[j + 1] - offsets[j] == len &&
          std::memcmp(flat + offsets[j], row, static_cast<size_t>(len) * sizeof(int32_t)) == 0) {
        (*inverse)[i] = u;
        break;
      }
      slot = (slot + 1) & mask;
    }
  }
}

std::vector<int32_t> ConnectedComponents(const int64_t* offsets, int64_t n, const int32_t* flat,
                                         int64_t flat_size) {
  CheckOffsets(offsets, n, flat_size);
  std::vector<int32_t> parent(static_cast<size_t>(n));
  std::iota(parent.begin(), parent.end(), 0);
  auto find = [&](int32_t x) {
    while (parent[x] != x) {
      parent[x] = parent[parent[x]];
      x = parent[x];
    }
    return x;
  };
  for (int64_t a = 0; a < n; ++a) {
    for (int64_t k = offsets[a]; k < offsets[a + 1]; ++k) {
      const int32_t b = flat[k];
      if (b < 0 || b >= n)
        throw std::invalid_argument("node " + std::to_string(a) + " has a neighbour " +
                                    std::to_string(b) + " outside [0, " + std::to_string(n) + ")");
      const int32_t ra = find(static_cast<int32_t>(a)), rb = find(b);
      // The smaller root wins, so every root is its component's smallest node.
      if (ra != rb) parent[std::max(ra, rb)] = std::min(ra, rb);
    }
  }
  std::vector<int32_t> label(static_cast<size_t>(n));
  int32_t next = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t r = find(static_cast<int32_t>(i));
    label[i] = (r == i) ? next++ : label[r];  // r <= i: labelled already
  }
  return label;
}

TrieArrays BuildTrie(const int64_t* offsets, int64_t n, const int32_t* flat, int64_t flat_size,
                     const uint8_t* include) {
  CheckOffsets(offsets, n, flat_size);
  int64_t max_nodes = 1;
  for (int64_t i = 0; i < n; ++i)
    if (include[i]) max_nodes += offsets[i + 1] - offsets[i];
  if (max_nodes > std::numeric_limits<int32_t>::max())
    throw std::invalid_argument("the entries need more trie nodes than int32 ids can number");
  // Edge (parent, token) -> child in an open-addressing table of packed keys.
  const uint64_t mask = TableSize(max_nodes) - 1;
  std::vector<uint64_t> keys(mask + 1, std::numeric_limits<uint64_t>::max());
  std::vector<int32_t> values(mask + 1);
  std::vector<int32_t> parent{-1}, token{-1};
  TrieArrays out;
  out.node_entry.push_back(-1);
  for (int64_t i = 0; i < n; ++i) {
    if (!include[i]) continue;
    if (offsets[i + 1] == offsets[i])
      throw std::invalid_argument("entry " + std::to_string(i) + " has no tokens");
    int32_t node = 0;
    for (int64_t k = offsets[i]; k < offsets[i + 1]; ++k) {
      const int32_t t = flat[k];
      if (t < 0)
        throw std::invalid_argument("entry " + std::to_string(i) + " has a negative token id");
      const uint64_t key = (static_cast<uint64_t>(node) << 32) | static_cast<uint32_t>(t);
      uint64_t slot = Mix(key) & mask;
      while (keys[slot] != key && keys[slot] != std::numeric_limits<uint64_t>::max())
        slot = (slot + 1) & mask;
      if (keys[slot] == key) {
        node = values[slot];
        continue;
      }
      const int32_t child = static_cast<int32_t>(parent.size());
      keys[slot] = key;
      values[slot] = child;
      parent.push_back(node);
      token.push_back(t);
      out.node_entry.push_back(-1);
      node = child;
    }
    if (out.node_entry[node] >= 0)
      throw std::invalid_argument("entries " + std::to_string(out.node_entry[node]) + " and " +
                                  std::to_string(i) + " have the same tokens");
    out.node_entry[node] = static_cast<int32_t>(i);
  }
  keys = {};
  values = {};
  const size_t num_nodes = parent.size();
  out.child_offsets.assign(num_nodes + 1, 0);
  for (size_t c = 1; c < num_nodes; ++c) ++out.child_offsets[parent[c] + 1];
  for (size_t p = 0; p < num_nodes; ++p) out.child_offsets[p + 1] += out.child_offsets[p];
  out.child_tokens.resize(num_nodes - 1);
  out.child_nodes.resize(num_nodes - 1);
  std::vector<int64_t> fill(out.child_offsets.begin(), out.child_offsets.end() - 1);
  // Children are numbered after their parent, so filling in node order keeps each parent's
  // children in creation order; sorting by token is then per parent.
  for (size_t c = 1; c < num_nodes; ++c) {
    const int64_t at = fill[parent[c]]++;
    out.child_tokens[at] = token[c];
    out.child_nodes[at] = static_cast<int32_t>(c);
  }
  std::vector<std::pair<int32_t, int32_t>> kids;
  for (size_t p = 0; p < num_nodes; ++p) {
    const int64_t b = out.child_offsets[p], e = out.child_offsets[p + 1];
    if (e - b < 2) continue;
    kids.clear();
    for (int64_t k = b; k < e; ++k) kids.emplace_back(out.child_tokens[k], out.child_nodes[k]);
    std::sort(kids.begin(), kids.end());
    for (int64_t k = b; k < e; ++k) {
      out.child_tokens[k] = kids[k - b].first;
      out.child_nodes[k] = kids[k - b].second;
    }
  }
  return out;
}

}  // namespace prealign
