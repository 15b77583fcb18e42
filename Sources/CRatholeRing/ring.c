int rr_placeholder(void){return 0;}
