namespace wpack { int packer_placeholder = 0; }
