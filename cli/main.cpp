#include <cstdio>
int main() { std::puts("wpack: under construction"); return 0; }
