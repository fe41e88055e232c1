mod inode_permission;
