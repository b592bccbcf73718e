namespace wpack { int verify_placeholder = 0; }
